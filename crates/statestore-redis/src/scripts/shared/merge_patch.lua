-- Merges a metadata patch into the metadata hash D, after every check
-- passed: HSET of the field, value pairs @list@[@set@..@set_last@] (each
-- value JSON text) and HDEL of the fields @list@[@del@..@last@] (the patch's
-- nulls), both with shared/push.lua; adds the fields added to nd and
-- subtracts the ones removed, so the header's count stays right. The one
-- merge of MERGE_METADATA, APPEND and ADD_SUMMARY.
--
-- Parameters: @list@ (ARGV or a table), @set@, @set_last@, @del@, @last@
--   (Lua expressions).
-- Uses and sets: nd.

do
  local pushed = 0
  --#include shared/push.lua cmd='HSET' key='D' list='@list@' first='@set@' last='@set_last@'
  local added = pushed
  pushed = 0
  --#include shared/push.lua cmd='HDEL' key='D' list='@list@' first='@del@' last='@last@'
  nd = tostring(tonumber(nd) + added - pushed)
end
