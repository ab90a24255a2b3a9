-- CPU-bound suite (bench/bench.py, section `run`): coroutine ping-pong.
local co = coroutine.wrap(function(x)
  while true do x = coroutine.yield(x + 1) end
end)
local x = 0
for _ = 1, 3000000 do x = co(x) end
print("coroutine", x)
-- CPU seconds of the whole script on stderr (the bench compares them besides the wall time)
io.stderr:write(("cpu %.6f\n"):format(os.clock()))
