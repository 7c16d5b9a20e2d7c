-- The start of every session script: its keys and common arguments, the
-- schema this build writes, and the two helpers that word error replies
-- (two closures, ~1k instructions).
--
-- Defines: rcall, rpcall (redis.call, redis.pcall); H, M, S, D, W (KEYS
--   1-5: header, messages, summaries, metadata, remembered writes);
--   SCHEMA ('@SCHEMA@': the schema this build writes, filled in by
--   Scripts::new); NOW, TTL (ARGV 1, 2); EXPIRE (the command TTL is given
--   to, PEXPIRE); IX (@IX@: the start of every list index key as a Lua
--   string, '' where the client keeps them); wrong_type(key, role, want)
--   and torn(what, recorded, found), each the text of a corrupt reply.

local rcall, rpcall = redis.call, redis.pcall
local H, M, S, D, W = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local SCHEMA, NOW, TTL, EXPIRE = '@SCHEMA@', ARGV[1], ARGV[2], 'PEXPIRE'
local IX = @IX@

local function wrong_type(key, role, want)
  return 'corrupt its ' .. role .. ' key holds a ' .. rcall('TYPE', key)['ok'] .. ', not a ' .. want
end

local function torn(what, recorded, found)
  return 'corrupt its header records ' .. recorded .. ' ' .. what .. ' but ' .. found ..
    ' are stored: a key was evicted or changed outside this library (see maxmemory-policy in the crate docs)'
end
