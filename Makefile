# softmig -- PGXS build
#
# make && make install && make installcheck   standard PGXS path (own server)
# make test                                     installs deps, builds and runs every suite
#                                               on every supported PostgreSQL (test/run_all.sh)
# make demo                                     installs deps, builds and runs the live demo

EXTENSION  = softmig
# the version is the control file's default_version
EXTVERSION := $(shell sed -n "s/^default_version *= *'\(.*\)'/\1/p" \
	$(dir $(firstword $(MAKEFILE_LIST)))$(EXTENSION).control)
MODULE_big = softmig

# Every C file under src/ is part of the module.  By layer, bottom up
# (doc/architecture.md):
#   common        identity spiutil sqltext expr state cache merge fence stmtcache
#   write path    trigger mapping authority opkey groups; gate ddl (SQL API, DDL guard)
#   operations    backfill mergeclear hydrate progress
#   read paths    readpath route discovery
#   observability parity parity* paritycache rules invariants
#   cross-database remote remote_trigger remote_parity
#   start-up      softmig (_PG_init calls each module's init)
OBJS = $(patsubst $(srcdir)/%.c,%.o,$(sort $(wildcard $(srcdir)/src/*.c)))

# pg_regress runs in this order: later tests use what earlier ones left
# (setup's fixtures, catalog and write-path tables).
REGRESS  = setup state catalog writes backfill envelope fields opkeys readpath
REGRESS += parity observe parity_cache monitoring
REGRESS += security names trust reentry partitions
REGRESS += plan_cache definitions exact_hydrate field_reinsert schema_guard sweep rules_rewrite
REGRESS += search_path install readonly
REGRESS += key_generators nullable_key
REGRESS += small_writes
REGRESS += parity_cache_settled
REGRESS += shape_views
REGRESS += groups
REGRESS += shape_views_always
REGRESS += shape_views_bulk
REGRESS += single_row_update
REGRESS += groups_inspect
REGRESS += single_row_writes
REGRESS += shape_views_plans
REGRESS += split
REGRESS += one_to_many
REGRESS += one_to_many_backfill
REGRESS += merge
REGRESS += shapes_partitioned
REGRESS += shapes_observe
REGRESS += one_to_many_tools
REGRESS += merge_gaps
REGRESS += split_tools
REGRESS += split_quarantine
REGRESS += split_hydrate
REGRESS += shapes_fkeys
REGRESS += owner_frames
REGRESS += direct_writes

# isolation specs each set up and tear down their own tables: all of them
ISOLATION = $(sort $(basename $(notdir $(wildcard $(srcdir)/test/isolation/specs/*.spec))))

# cross-database migrations on logical replication (doc/cross-database.md):
# libpq to the other database, as contrib/postgres_fdw and dblink link it
PG_CPPFLAGS_REMOTE = -I$(libpq_srcdir)
SHLIB_LINK_INTERNAL = $(libpq)

# The install script is built from src/install/*.sql in name order.
SQL_PARTS = $(sort $(wildcard $(srcdir)/src/install/*.sql))
DATA_built = softmig--$(EXTVERSION).sql
# The oldest released install script (frozen, never edited) and the upgrade scripts.
DATA = $(patsubst $(srcdir)/%,%,$(wildcard $(srcdir)/versions/softmig--*.sql))

PG_CPPFLAGS = -I$(srcdir)/src $(PG_CPPFLAGS_REMOTE)
PG_CFLAGS   = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare

REGRESS_OPTS = --inputdir=. --load-extension=softmig

ISOLATION_OPTS = --inputdir=test/isolation --load-extension=softmig

TAP_TESTS = 1
# The longest TAP files first, so that a parallel run (make test passes
# PROVE_FLAGS=-j2) does not end waiting for one of them.
TAP_SLOW = test/t/091_parity_cache_fuzz.pl test/t/120_lifecycle_soak.pl \
	test/t/112_remote_crash.pl test/t/110_remote_life.pl test/t/121_group_soak.pl
PROVE_TESTS = $(TAP_SLOW) $(filter-out $(TAP_SLOW),$(sort $(wildcard test/t/*.pl)))

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# every object depends on every header of the module
$(OBJS): $(wildcard $(srcdir)/src/*.h)

softmig--$(EXTVERSION).sql: $(SQL_PARTS)
	cat $(SQL_PARTS) > $@

# virtual generated columns exist from PostgreSQL 18 on
ifeq ($(shell test $(VERSION_NUM) -ge 180000 2>/dev/null && echo yes),yes)
REGRESS += direct_writes_virtual
endif

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
