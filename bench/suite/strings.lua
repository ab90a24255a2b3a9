-- CPU-bound suite (bench/bench.py, section `run`): string building and matching.
local words, count, total = {}, 0, 0
for round = 1, 24 do
  local parts = {}
  for i = 1, 20000 do
    parts[#parts + 1] = string.format("item%d=%s;", i, ("x"):rep(i % 7 + 1))
  end
  local s = table.concat(parts)
  for k, v in s:gmatch("item(%d+)=(x+);") do
    count = count + 1
    total = total + #v
  end
  local acc = ""
  for i = 1, 2000 do acc = acc .. (i % 10) end
  total = total + #acc + #(s:gsub("x+", string.upper)) + (s:find("item19999=", 1, true) or 0)
  words[round] = s:sub(1, 8):upper()
end
print("strings", count, total, words[24])
-- CPU seconds of the whole script on stderr (the bench compares them besides the wall time)
io.stderr:write(("cpu %.6f\n"):format(os.clock()))
