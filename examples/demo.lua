-- The llmspell demo: `llmspell run` finds or starts the kernel, whose runner forks a fresh process for it.
-- Run it twice: the visit counter lives in $LLMSPELL_HOME/state.json, not in the kernel.
local visits = state.update("demo.visits", function(n) return (n or 0) + 1 end)
print(("Hello from %s in the llmspell kernel, visit #%d"):format(_VERSION, visits))

-- Each run starts with fresh globals: a global from the previous run is not here.
print("leftover global from the last run:", demo_leftover)
demo_leftover = "set by run #" .. visits

-- Output streams live, stdout and stderr stay separate.
for i = 1, 3 do print(("line %d of output"):format(i)) end
io.stderr:write("this line went to stderr\n")

-- Values of every kind round-trip through the store.
state.set("demo.last", { at = os.time(), args = { table.unpack(arg) }, pi = math.pi, ok = true })
local last = state.get("demo.last")
print(("stored and read back: pi = %.5f, ok = %s, %d args"):format(last.pi, tostring(last.ok), #last.args))
