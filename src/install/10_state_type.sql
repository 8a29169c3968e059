-------------------------------------------------------------------------------
-- The state type: one byte, ordered legacy < mirrored < new_write < new_read
-- < cutover.
-------------------------------------------------------------------------------
CREATE TYPE @extschema@.state;

CREATE FUNCTION @extschema@.state_in(pg_catalog.cstring) RETURNS @extschema@.state
    AS 'MODULE_PATHNAME', 'softmig_state_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.state_out(@extschema@.state) RETURNS pg_catalog.cstring
    AS 'MODULE_PATHNAME', 'softmig_state_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.state_recv(pg_catalog.internal) RETURNS @extschema@.state
    AS 'MODULE_PATHNAME', 'softmig_state_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION @extschema@.state_send(@extschema@.state) RETURNS pg_catalog.bytea
    AS 'MODULE_PATHNAME', 'softmig_state_send' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE TYPE @extschema@.state (
    INPUT = @extschema@.state_in,
    OUTPUT = @extschema@.state_out,
    RECEIVE = @extschema@.state_recv,
    SEND = @extschema@.state_send,
    INTERNALLENGTH = 1,
    PASSEDBYVALUE,
    ALIGNMENT = char,
    STORAGE = plain
);
COMMENT ON TYPE @extschema@.state IS
    'migration state: legacy < mirrored < new_write < new_read < cutover';
COMMENT ON FUNCTION @extschema@.state_in(pg_catalog.cstring) IS 'input function of softmig.state';
COMMENT ON FUNCTION @extschema@.state_out(@extschema@.state) IS 'output function of softmig.state';
COMMENT ON FUNCTION @extschema@.state_recv(pg_catalog.internal) IS 'binary input function of softmig.state';
COMMENT ON FUNCTION @extschema@.state_send(@extschema@.state) IS 'binary output function of softmig.state';

CREATE FUNCTION @extschema@.state_eq(@extschema@.state, @extschema@.state) RETURNS boolean
    AS 'MODULE_PATHNAME', 'softmig_state_eq' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION @extschema@.state_ne(@extschema@.state, @extschema@.state) RETURNS boolean
    AS 'MODULE_PATHNAME', 'softmig_state_ne' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION @extschema@.state_lt(@extschema@.state, @extschema@.state) RETURNS boolean
    AS 'MODULE_PATHNAME', 'softmig_state_lt' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION @extschema@.state_le(@extschema@.state, @extschema@.state) RETURNS boolean
    AS 'MODULE_PATHNAME', 'softmig_state_le' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION @extschema@.state_gt(@extschema@.state, @extschema@.state) RETURNS boolean
    AS 'MODULE_PATHNAME', 'softmig_state_gt' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION @extschema@.state_ge(@extschema@.state, @extschema@.state) RETURNS boolean
    AS 'MODULE_PATHNAME', 'softmig_state_ge' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION @extschema@.state_cmp(@extschema@.state, @extschema@.state) RETURNS integer
    AS 'MODULE_PATHNAME', 'softmig_state_cmp' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION @extschema@.state_hash(@extschema@.state) RETURNS integer
    AS 'MODULE_PATHNAME', 'softmig_state_hash' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
CREATE FUNCTION @extschema@.state_hash_extended(@extschema@.state, bigint) RETURNS bigint
    AS 'MODULE_PATHNAME', 'softmig_state_hash_extended' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE LEAKPROOF;
COMMENT ON FUNCTION @extschema@.state_eq(@extschema@.state, @extschema@.state) IS 'softmig.state equality';
COMMENT ON FUNCTION @extschema@.state_ne(@extschema@.state, @extschema@.state) IS 'softmig.state inequality';
COMMENT ON FUNCTION @extschema@.state_lt(@extschema@.state, @extschema@.state) IS 'softmig.state less than';
COMMENT ON FUNCTION @extschema@.state_le(@extschema@.state, @extschema@.state) IS 'softmig.state less than or equal';
COMMENT ON FUNCTION @extschema@.state_gt(@extschema@.state, @extschema@.state) IS 'softmig.state greater than';
COMMENT ON FUNCTION @extschema@.state_ge(@extschema@.state, @extschema@.state) IS 'softmig.state greater than or equal';
COMMENT ON FUNCTION @extschema@.state_cmp(@extschema@.state, @extschema@.state) IS 'btree comparison support for softmig.state';
COMMENT ON FUNCTION @extschema@.state_hash(@extschema@.state) IS 'hash support for softmig.state';
COMMENT ON FUNCTION @extschema@.state_hash_extended(@extschema@.state, bigint) IS 'seeded hash support for softmig.state';

CREATE OPERATOR @extschema@.= (
    LEFTARG = @extschema@.state, RIGHTARG = @extschema@.state,
    FUNCTION = @extschema@.state_eq,
    COMMUTATOR = OPERATOR(@extschema@.=), NEGATOR = OPERATOR(@extschema@.<>),
    RESTRICT = pg_catalog.eqsel, JOIN = pg_catalog.eqjoinsel, HASHES, MERGES);
CREATE OPERATOR @extschema@.<> (
    LEFTARG = @extschema@.state, RIGHTARG = @extschema@.state,
    FUNCTION = @extschema@.state_ne,
    COMMUTATOR = OPERATOR(@extschema@.<>), NEGATOR = OPERATOR(@extschema@.=),
    RESTRICT = pg_catalog.neqsel, JOIN = pg_catalog.neqjoinsel);
CREATE OPERATOR @extschema@.< (
    LEFTARG = @extschema@.state, RIGHTARG = @extschema@.state,
    FUNCTION = @extschema@.state_lt,
    COMMUTATOR = OPERATOR(@extschema@.>), NEGATOR = OPERATOR(@extschema@.>=),
    RESTRICT = pg_catalog.scalarltsel, JOIN = pg_catalog.scalarltjoinsel);
CREATE OPERATOR @extschema@.<= (
    LEFTARG = @extschema@.state, RIGHTARG = @extschema@.state,
    FUNCTION = @extschema@.state_le,
    COMMUTATOR = OPERATOR(@extschema@.>=), NEGATOR = OPERATOR(@extschema@.>),
    RESTRICT = pg_catalog.scalarlesel, JOIN = pg_catalog.scalarlejoinsel);
CREATE OPERATOR @extschema@.> (
    LEFTARG = @extschema@.state, RIGHTARG = @extschema@.state,
    FUNCTION = @extschema@.state_gt,
    COMMUTATOR = OPERATOR(@extschema@.<), NEGATOR = OPERATOR(@extschema@.<=),
    RESTRICT = pg_catalog.scalargtsel, JOIN = pg_catalog.scalargtjoinsel);
CREATE OPERATOR @extschema@.>= (
    LEFTARG = @extschema@.state, RIGHTARG = @extschema@.state,
    FUNCTION = @extschema@.state_ge,
    COMMUTATOR = OPERATOR(@extschema@.<=), NEGATOR = OPERATOR(@extschema@.<),
    RESTRICT = pg_catalog.scalargesel, JOIN = pg_catalog.scalargejoinsel);

CREATE OPERATOR CLASS @extschema@.state_ops
    DEFAULT FOR TYPE @extschema@.state USING btree AS
        OPERATOR 1 @extschema@.<,
        OPERATOR 2 @extschema@.<=,
        OPERATOR 3 @extschema@.=,
        OPERATOR 4 @extschema@.>=,
        OPERATOR 5 @extschema@.>,
        FUNCTION 1 @extschema@.state_cmp(@extschema@.state, @extschema@.state);

CREATE OPERATOR CLASS @extschema@.state_hash_ops
    DEFAULT FOR TYPE @extschema@.state USING hash AS
        OPERATOR 1 @extschema@.=,
        FUNCTION 1 @extschema@.state_hash(@extschema@.state),
        FUNCTION 2 @extschema@.state_hash_extended(@extschema@.state, bigint);

CREATE CAST (@extschema@.state AS text) WITH INOUT AS ASSIGNMENT;
CREATE CAST (text AS @extschema@.state) WITH INOUT;

CREATE FUNCTION @extschema@.is_legal_transition(from_state @extschema@.state, to_state @extschema@.state)
    RETURNS boolean
    AS 'MODULE_PATHNAME', 'softmig_is_legal_transition' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION @extschema@.is_legal_transition(@extschema@.state, @extschema@.state) IS
    'true when a migration may move from from_state to to_state: one step forward, or one step back out of mirrored, new_write or new_read';

CREATE TYPE @extschema@.side AS ENUM ('legacy', 'new');
COMMENT ON TYPE @extschema@.side IS 'a side of a migration: the legacy table or the new (target) table';
