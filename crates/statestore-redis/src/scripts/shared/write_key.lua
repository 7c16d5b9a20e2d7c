-- Splits ARGV 3 of a writer into the expectation and the call's own key:
-- where the client may re-send a call by itself (the cluster client), the
-- expectation is followed by a space and a key the store made for this
-- call, as its field in the remembered writes (g:<key>); see
-- shared/replayed_call.lua.
--
-- Defines: want (a: any, n: absent, else the exact version); wfield (the
--   call's field, or '').

local want, wfield = ARGV[3], ''
do
  local sp = string.find(want, ' ', 1, true)
  if sp then want, wfield = string.sub(want, 1, sp - 1), string.sub(want, sp + 1) end
end
