-- CPU-bound suite (bench/bench.py, section `run`): an arithmetic loop (integers and floats).
local s, f = 0, 0.0
for i = 1, 20000000 do
  s = (s + i * 7) % 1000003
  f = f + (i % 13) * 0.5
end
print("arith", s, f)
-- CPU seconds of the whole script on stderr (the bench compares them besides the wall time)
io.stderr:write(("cpu %.6f\n"):format(os.clock()))
