-- One interned user agent: what a session read with HGETALL refers to
-- ('uh'), when this process has not seen it yet.
-- KEYS: 1 user agents
-- ARGV: 1 digest
-- Returns its JSON text, or false.
--@include agents
return agent_text(KEYS[1], ARGV[1])
