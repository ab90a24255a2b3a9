-- CPU-bound suite (bench/bench.py, section `run`): `pcall` in a loop, half of the calls raising.
local function f(i)
  if i % 2 == 0 then error("even", 0) end
  return i
end
local ok_n, err_n = 0, 0
for i = 1, 3000000 do
  local ok = pcall(f, i)
  if ok then ok_n = ok_n + 1 else err_n = err_n + 1 end
end
print("pcall", ok_n, err_n)
-- CPU seconds of the whole script on stderr (the bench compares them besides the wall time)
io.stderr:write(("cpu %.6f\n"):format(os.clock()))
