
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
