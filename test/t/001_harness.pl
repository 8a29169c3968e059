# Smoke test for the TAP harness: a migration defined before a restart is
# still there, in state legacy, after it.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('harness');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'softmig'");
$node->start;

$node->safe_psql('postgres', q{
	CREATE EXTENSION softmig;
	CREATE TABLE legacy_t (id int PRIMARY KEY, v text);
	CREATE TABLE target_t (id int PRIMARY KEY, v text);
	SELECT softmig.create_migration('m1', 'legacy_t', 'target_t');
});

$node->restart;

# 'm1'::text, not a bare 'm1': softmig.state('m1') with an unknown-typed
# literal is a function-style cast to the type softmig.state (PostgreSQL
# treats f('lit') as a cast when f names a type), not a call of state(text).
is($node->safe_psql('postgres', q{SELECT softmig.state('m1'::text)::text}),
	'legacy', 'migration m1 is in state legacy after a restart');
is($node->safe_psql('postgres', q{SELECT count(*) FROM softmig.migrations}),
	'1', 'exactly one migration in softmig.migrations after a restart');

$node->stop;
done_testing();
