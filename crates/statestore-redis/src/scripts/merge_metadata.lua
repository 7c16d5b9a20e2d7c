-- MERGE_METADATA: `merge_metadata(id, patch, expect)`. Merges a patch
-- into the metadata hash (shared/merge_patch.lua), creating the session
-- when it does not exist.
--
-- KEYS
--   1..5  the session's header, messages, summaries, metadata and
--         remembered writes (keys.rs: H, M, S, D, W below), one slot
-- ARGV
--   1     now, ms since the epoch (client clock; stored, never compared)
--   2     TTL in ms for every key, 0 for none (given to PEXPIRE as sent)
--   3     the expectation, and maybe the call's own key (shared/write_key.lua)
--   4     P, the number of field, value pairs to set
--   5 ..  the pairs (values JSON text), 2P
--   then  the fields to delete (the patch's nulls), to #ARGV
--
-- Reply (one string)
--   ok <version>           also for a re-send of a merge that ran
--   conflict <version>     the expectation failed (-1: no session)
--   corrupt <description>  a key of the wrong type, a torn session (a
--                          count the header records does not match), a
--                          malformed header or argument
--   schema <found>         the header is of a newer schema than this build's
--
--#include shared/prelude.lua
--#include shared/write_key.lua

local f = rpcall('HMGET', H, 'version', 'n', 'user_id')
--#include shared/header.lua

local leftovers = false
if V then
  if not stale then
    if nm ~= '0' then
      --#include shared/check_len.lua key='M' count='nm' cmd='LLEN' role='message list' want='list'

    end
    if ns ~= '0' then
      --#include shared/check_len.lua key='S' count='ns' cmd='LLEN' role='summary list' want='list'

    end
    --#include shared/check_len.lua key='D' count='nd' cmd='HLEN' role='metadata hash' want='hash'

  end
else
  --#include shared/leftovers.lua

  s, nm, ns, nd, wk, wg = SCHEMA, '0', '0', '0', '0', '0'
end
--#include shared/replayed_call.lua
--#include shared/expect.lua

-- Every check passed: write.
if leftovers then rcall('DEL', M, S, D, W) end
local first_del = 5 + 2 * tonumber(ARGV[4])
--#include shared/merge_patch.lua list='ARGV' set='5' set_last='first_del - 1' del='first_del' last='#ARGV'

local nv = '1'
if V then nv = tostring(tonumber(V) + 1) end
--#include shared/remember_call.lua
--#include shared/bump.lua
--#include shared/expire_all.lua

return 'ok ' .. nv
