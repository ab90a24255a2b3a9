-- CPU-bound suite (bench/bench.py, section `run`): recursion.
local function fib(n)
  if n < 2 then return n end
  return fib(n - 1) + fib(n - 2)
end
print("fib", fib(34))
-- CPU seconds of the whole script on stderr (the bench compares them besides the wall time)
io.stderr:write(("cpu %.6f\n"):format(os.clock()))
