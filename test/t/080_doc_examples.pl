# Every SQL example in README.md and doc/*.md is executed, so the docs
# cannot rot.
#
# Each file with ```sql blocks gets a fresh database. The fixture
# test/doc_examples/<file>.sql, if there is one, runs first and creates the
# tables the examples assume. Without a fixture the database starts with
# CREATE EXTENSION softmig, unless the file's first block creates it. Then the
# file's blocks run in order, in one psql session per block, against the same
# database:
#   - a statement that the docs show failing carries a comment
#     "-- ERROR: ..." right after it, naming "(SQLSTATE xxxxx)" on that line
#     or on the comment lines continuing it. The block must raise
#     exactly those SQLSTATEs, in that order, and no other error;
#   - a block preceded by "<!-- doc-test: before: <sql> -->" (one line, not
#     rendered) runs that SQL first: the state the surrounding prose
#     describes but the examples do not reach themselves;
#   - a block preceded by "<!-- doc-test: skip: <reason> -->" is not run
#     (placeholders such as "INSERT INTO t ...;"). The reason is reported, and
#     the number of skipped blocks is kept small by a test below;
#   - a file whose fixture needs pgTAP is not run where pgTAP is missing
#     (make installcheck on a server without it; make test installs it).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $root = $ENV{TESTDIR} // '.';
my @files = ("$root/README.md", sort glob("$root/doc/*.md"));
# DOC_ONLY=<regex> runs only the matching files (for editing the docs)
@files = grep { /$ENV{DOC_ONLY}/ } @files if $ENV{DOC_ONLY};

my $node = PostgreSQL::Test::Cluster->new('docs');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'softmig'");
$node->start;

# the ```sql blocks of a markdown file: [text, skip reason or undef, line]
sub sql_blocks
{
	my ($path) = @_;
	open(my $fh, '<', $path) or die "cannot open $path: $!";
	my (@blocks, $cur, $skip, $before, $start);
	my $n = 0;
	while (my $line = <$fh>)
	{
		$n++;
		if (defined $cur)
		{
			if ($line =~ /^```\s*$/)
			{
				push @blocks, [ $cur, $skip, $start, $before ];
				undef $cur;
				undef $skip;
				undef $before;
			}
			else
			{
				$cur .= $line;
			}
		}
		elsif ($line =~ /^```sql\s*$/)
		{
			$cur = '';
			$start = $n;
		}
		elsif ($line =~ /<!--\s*doc-test:\s*skip:\s*(.*?)\s*-->/)
		{
			$skip = $1;
		}
		elsif ($line =~ /<!--\s*doc-test:\s*before:\s*(.*?)\s*-->/)
		{
			$before = $1;
		}
		elsif ($line !~ /^\s*$/)
		{
			undef $skip;    # a marker applies to the next block only
			undef $before;
		}
	}
	close($fh);
	return @blocks;
}

# The SQLSTATEs a block says it raises: each "-- ERROR:" comment, with the
# comment lines that continue it, names one as "(SQLSTATE xxxxx)".
sub expected_errors
{
	my ($sql) = @_;
	my (@codes, $comment);
	for my $line (split /\n/, $sql . "\n-\n")
	{
		if (defined $comment && $line =~ /^\s*--(.*)$/ && $line !~ /^\s*--\s*ERROR:/)
		{
			$comment .= $1;
			next;
		}
		if (defined $comment)
		{
			$comment =~ /\(SQLSTATE\s+([0-9A-Z]{5})\)/
			  or die "an \"-- ERROR:\" comment without \"(SQLSTATE xxxxx)\": $comment";
			push @codes, $1;
			undef $comment;
		}
		$comment = $1 if $line =~ /^\s*--\s*ERROR:(.*)$/;
	}
	return @codes;
}

my ($run, $skipped, $missing_pgtap) = (0, 0, 0);
my $have_pgtap = $node->safe_psql('postgres',
	q{SELECT count(*) FROM pg_available_extensions WHERE name = 'pgtap'});
my $dbn = 0;
for my $path (@files)
{
	my @blocks = sql_blocks($path);
	next unless @blocks;
	(my $name = $path) =~ s{^\Q$root\E/}{};
	(my $fixture_name = $name) =~ s{/}{_}g;
	$fixture_name =~ s{\.md$}{.sql};
	my $fixture = "$root/test/doc_examples/$fixture_name";
	my $db = 'doc' . ++$dbn;

	if (-f $fixture && slurp_file($fixture) =~ /CREATE EXTENSION pgtap/i && !$have_pgtap)
	{
		$missing_pgtap++;
		note("$name: not run, pgTAP is not installed");
		next;
	}
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	if (-f $fixture)
	{
		$node->safe_psql($db, slurp_file($fixture));
	}
	elsif ($blocks[0][0] !~ /CREATE EXTENSION softmig/)
	{
		$node->safe_psql($db, 'CREATE EXTENSION softmig');
	}

	for my $b (@blocks)
	{
		my ($sql, $skip, $line, $before) = @$b;
		if (defined $skip)
		{
			$skipped++;
			note("$name:$line skipped: $skip");
			next;
		}
		$run++;
		$node->safe_psql($db, $before) if defined $before;
		my @expected = expected_errors($sql);
		my ($stdout, $stderr) = ('', '');
		$node->psql($db, "\\set VERBOSITY verbose\n" . $sql,
			stdout => \$stdout, stderr => \$stderr, on_error_stop => 0);
		my @got = $stderr =~ /ERROR:\s+([0-9A-Z]{5}):/g;
		is(join(' ', @got), join(' ', @expected),
			"$name:$line runs" . (@expected ? " and fails where it says (@expected)" : ''))
		  or diag($stderr);
	}
}

cmp_ok($run, '>=', ($ENV{DOC_ONLY} || $missing_pgtap) ? 0 : 30, "$run documentation examples ran");
cmp_ok($skipped, '<=', 5, "$skipped examples skipped (placeholders only)");

done_testing();
