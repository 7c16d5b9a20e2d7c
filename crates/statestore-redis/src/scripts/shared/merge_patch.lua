
do
  local pushed = 0
--#include shared/push.lua cmd='HSET' key='D' list='ARGV' first='@set@' last='@set_last@'
  local added = pushed
  pushed = 0
--#include shared/push.lua cmd='HDEL' key='D' list='ARGV' first='@del@' last='@last@'
  nd = tostring(tonumber(nd) + added - pushed)
end
