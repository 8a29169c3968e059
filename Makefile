# softmig -- PGXS build
#
# make && make install && make installcheck   standard PGXS path (own server)
# make test                                     installs deps, builds and runs every suite
#                                               on every supported PostgreSQL (test/run_all.sh)
# make demo                                     installs deps, builds and runs the live demo

EXTENSION  = softmig
EXTVERSION = 0.2.0
MODULE_big = softmig

# One C file and one SQL file per concern; each module adds its own lines.
OBJS  = src/softmig.o src/state.o src/gate.o src/cache.o src/mapping.o src/trigger.o
OBJS += src/identity.o src/spiutil.o src/sqltext.o src/ddl.o
OBJS += src/fence.o src/stmtcache.o src/backfill.o
OBJS += src/expr.o src/authority.o
OBJS += src/merge.o
OBJS += src/hydrate.o
OBJS += src/opkey.o
OBJS += src/readpath.o src/discovery.o src/route.o
REGRESS = setup state catalog writes backfill envelope fields
ISOLATION = advance_inflight mirror_same_key opposite_writers advance_timeout
REGRESS += opkeys
ISOLATION += opkey_race opkey_opposite
ISOLATION += backfill_races backfill_concurrent
ISOLATION += backfill_deadlock state_lock_upgrade
ISOLATION += envelope_race quarantine_race route_replan
REGRESS += readpath

OBJS += src/parity.o src/paritybuild.o src/parityhash.o src/paritydigest.o
OBJS += src/paritydescent.o src/paritywarm.o src/parityinspect.o src/paritycache.o src/rules.o
REGRESS += parity observe parity_cache
ISOLATION += parity_consistent parity_cache_race

# monitoring: live row estimates, backfill progress (doc/monitoring.md)
OBJS += src/progress.o
REGRESS += monitoring

# The install script is built from src/sql/*.sql in name order.
SQL_PARTS = $(sort $(wildcard $(srcdir)/src/sql/*.sql))
DATA_built = softmig--$(EXTVERSION).sql
# Released install scripts (frozen, never edited) and the upgrade scripts.
DATA = $(patsubst $(srcdir)/%,%,$(wildcard $(srcdir)/versions/softmig--*.sql))

PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS   = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare

REGRESS_OPTS = --inputdir=. --load-extension=softmig

ISOLATION_OPTS = --inputdir=test/isolation --load-extension=softmig

TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

$(OBJS): src/softmig.h src/compat.h src/sqlstate.h
src/readpath.o src/discovery.o src/softmig.o: src/readpath.h
src/opkey.o src/trigger.o src/softmig.o: src/opkey.h
src/parity.o src/rules.o src/softmig.o: src/observe.h
src/parity.o src/paritybuild.o src/parityhash.o src/paritydigest.o src/paritydescent.o src/paritywarm.o src/parityinspect.o src/paritycache.o: src/paritycache.h src/parityint.h
src/parity.o src/rules.o: src/readpath.h

softmig--$(EXTVERSION).sql: $(SQL_PARTS)
	cat $(SQL_PARTS) > $@

ifeq ($(shell test $(VERSION_NUM) -lt 150000 2>/dev/null && echo old),old)
$(error softmig needs PostgreSQL 15 or later; $(PG_CONFIG) reports $(VERSION))
endif

.PHONY: test demo pgtap
test:
	bash test/run_all.sh

demo:
	SOFTMIG_SUITES=demo SOFTMIG_PG_VERSIONS="$${SOFTMIG_PG_VERSIONS:-host}" bash test/run_all.sh

# pgTAP suite against the server in PG* environment variables
pgtap:
	pg_prove --ext .sql -v test/pgtap/

# The demo as a check (CI-sized): the same as make demo
.PHONY: demo-check dist deb
demo-check: demo

# Release tarball of the committed tree: dist/softmig-<version>.tar.gz
dist:
	mkdir -p dist
	git archive --format=tar.gz --prefix=softmig-$(EXTVERSION)/ -o dist/softmig-$(EXTVERSION).tar.gz HEAD
	@echo "dist/softmig-$(EXTVERSION).tar.gz"

# Debian packages postgresql-NN-softmig (needs dpkg-dev, debhelper and postgresql-server-dev-all)
deb:
	dpkg-buildpackage -us -uc -b

# out-of-tree (VPATH) builds, e.g. pg_buildext: object files live under src/
ifdef VPATH
$(shell mkdir -p src)
endif
.PHONY: soak
soak:
	bash test/soak/run.sh

# pg_regress, isolation and TAP on an assert-enabled PostgreSQL 15 built
# from Debian's source package (minutes; not part of make test)
.PHONY: assert-check
assert-check:
	bash test/assert_check.sh
REGRESS += security names
REGRESS += trust reentry partitions
REGRESS += plan_cache definitions exact_hydrate field_reinsert schema_guard sweep rules_rewrite
REGRESS += search_path install
REGRESS += readonly
