-- ADD_SUMMARY: `add_summary_with(id, add)`. Appends a summary of a range
-- of the messages, and merges the metadata patch it carries
-- (AddSummary::metadata) — only after every check passed, so a conflict or
-- range merges nothing; the metadata hash is length-checked first whenever
-- a patch writes it.
--
-- KEYS
--   1..5  the session's header, messages, summaries, metadata and
--         remembered writes (keys.rs: H, M, S, D, W below), one slot
-- ARGV
--   1     now, ms since the epoch (client clock; stored, never compared)
--   2     TTL in ms for every key, 0 for none (given to PEXPIRE as sent)
--   3     the expectation, and maybe the call's own key (shared/write_key.lua)
--   4, 5  the covered range of messages: start, end (exclusive)
--   6     the summary, as JSON
--   7     P, the number of metadata fields to set
--   8 ..  the field, value pairs (values JSON text), 2P
--   then  the fields to delete (the patch's nulls), to #ARGV
--
-- Reply (one string)
--   ok <version>           also for a re-send of a call that ran
--   missing                no session
--   range <messages>       the range is empty or beyond the history
--   conflict <version>     the expectation failed
--   corrupt <description>  a key of the wrong type, a torn session (a
--                          count the header records does not match), a
--                          malformed header or argument
--   schema <found>         the header is of a newer schema than this build's
--
--#include shared/prelude.lua
--#include shared/write_key.lua

local f = rpcall('HMGET', H, 'version', 'n', 'user_id')
--#include shared/header.lua

if not V then return 'missing' end
if not stale then
  --#include shared/check_len.lua key='M' count='nm' cmd='LLEN' role='message list' want='list'
  --#include shared/check_len.lua key='S' count='ns' cmd='LLEN' role='summary list' want='list'

  if nd ~= '0' or #ARGV > 7 then
    --#include shared/check_len.lua key='D' count='nd' cmd='HLEN' role='metadata hash' want='hash'

  end
end
--#include shared/replayed_call.lua
--#include shared/expect.lua

local first, last, total = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(nm)
if first >= last or last > total then return 'range ' .. nm end
-- Every check passed: write.
rcall('RPUSH', S, ARGV[6])
ns = tostring(tonumber(ns) + 1)
if #ARGV > 7 then
  local first_del = 8 + 2 * tonumber(ARGV[7])
  --#include shared/merge_patch.lua list='ARGV' set='8' set_last='first_del - 1' del='first_del' last='#ARGV'

end
local nv = tostring(tonumber(V) + 1)
--#include shared/remember_call.lua
--#include shared/bump.lua
--#include shared/expire_all.lua

return 'ok ' .. nv
