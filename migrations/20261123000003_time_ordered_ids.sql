-- Time-ordered ids (UUIDv7, RFC 9562) for the rows the hot path inserts: events
-- (chosen by Herald), event logs and invocation logs (chosen here).
--
-- A random UUID lands on a random page of its primary key index, so every insert
-- touched a different page: more pages in memory, more page splits, and after each
-- checkpoint a full-page image in the WAL for each page touched. Time-ordered ids
-- land on the rightmost page, like a sequence, and stay unique across nodes.
--
-- 48 bits of Unix time in milliseconds, then the version (7), the variant and 74
-- random bits taken from gen_random_uuid().
CREATE FUNCTION herald_uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE
AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;
