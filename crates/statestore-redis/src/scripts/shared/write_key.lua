
local want, wfield = ARGV[3], ''
do
  local sp = string.find(want, ' ', 1, true)
  if sp then want, wfield = string.sub(want, 1, sp - 1), string.sub(want, sp + 1) end
end
