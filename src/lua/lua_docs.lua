-- Documentation strings for help(x) and Jupyter inspect requests.
-- Evaluated as a Lua 5.4 chunk; returns a table mapping names to text.
-- Format of each entry: signature line, blank line, short description.
local D = {}

---------------------------------------------------------------------------
-- Kernel globals
---------------------------------------------------------------------------

D["help"] = [==[
help([x])

Shows documentation. x may be a function, a library table or a name string,
e.g. help(string.format), help("string.format"), help(state), help("file:read").
With no argument it prints an overview of the llmspell kernel globals
(state, display, help, arg) and the standard libraries.
Example: help(table.sort)]==]

D["state"] = [==[
state  (library)

Persistent key/value store kept in $LLMSPELL_HOME/state.json. It is shared
by every llmspell client and kernel and survives restarts.
Values: nil (deletes the key), booleans, integers, floats (not NaN or inf),
strings (binary-safe), and arrays or string-keyed tables of these, nested.
Writes made by a cell reach the disk once, before the cell's reply is sent.
Members: state.set, state.get, state.delete, state.keys, state.clear, state.update.]==]

D["state.set"] = [==[
state.set(key, value)

Stores value under the string key, replacing any previous value. Setting
nil removes the key. The value must be storable (see help(state)).
Example: state.set("runs", 3)]==]

D["state.get"] = [==[
state.get(key [, default]) -> value

Returns the value stored under key, or default (nil if omitted) when the
key is absent.
Example: local n = state.get("runs", 0)]==]

D["state.delete"] = [==[
state.delete(key) -> boolean

Removes key from the store. Returns true if the key existed, false otherwise.]==]

D["state.keys"] = [==[
state.keys([prefix]) -> array

Returns a sorted array of the stored keys. With prefix, only keys that
start with that string are listed.
Example: for _, k in ipairs(state.keys("job.")) do print(k) end]==]

D["state.clear"] = [==[
state.clear()

Removes every key from the store (for all clients and kernels sharing it).]==]

D["state.update"] = [==[
state.update(key, fn) -> new value

Calls fn(old) with the current value (nil if absent) and stores what it
returns, atomically with respect to other kernels and clients. Returning
nil deletes the key. Returns the new value.
Example: state.update("counter", function(n) return (n or 0) + 1 end)]==]

D["display"] = [==[
display(value [, {display_id = id}]) -> handle

Sends value to the front end as rich output and returns a handle whose
handle:update(value) replaces that output in place. A display_id lets
later calls target the same output area.
Builders: display.html, display.markdown, display.latex, display.svg,
display.png, display.jpeg, display.json; display.clear clears output.
A displayable value left as a cell's last expression is shown richly.]==]

D["handle:update"] = [==[
handle:update(value)

Replaces the output previously shown by display(...) with value, in place.
Example: local h = display("0%"); h:update("50%")]==]

D["display.html"] = [==[
display.html(s) -> displayable

Wraps the HTML string s so it is rendered as HTML (text/html).
Example: display.html("<b>bold</b>")]==]

D["display.markdown"] = [==[
display.markdown(s) -> displayable

Wraps s so it is rendered as Markdown (text/markdown).]==]

D["display.latex"] = [==[
display.latex(s) -> displayable

Wraps s so it is rendered as LaTeX (text/latex), e.g. "$e^{i\pi}+1=0$".]==]

D["display.svg"] = [==[
display.svg(s) -> displayable

Wraps an SVG document string so it is rendered as an image (image/svg+xml).]==]

D["display.png"] = [==[
display.png(bytes) -> displayable

Wraps a string holding raw PNG bytes so it is shown as an image.
Example: display.png(io.open("plot.png", "rb"):read("a"))]==]

D["display.jpeg"] = [==[
display.jpeg(bytes) -> displayable

Wraps a string holding raw JPEG bytes so it is shown as an image.]==]

D["display.json"] = [==[
display.json(t) -> displayable

Wraps the Lua table t so it is shown as JSON (application/json),
typically as a collapsible tree in the front end.]==]

D["display.clear"] = [==[
display.clear([wait])

Clears the current cell's output. With wait = true, the clearing is
delayed until the next output arrives, which avoids flicker in loops.]==]

D["arg"] = [==[
arg  (table)

In `llmspell run SCRIPT ARGS...`, arg[0] is the script name and
arg[1] .. arg[n] are the arguments, as with the standalone lua command.
Example: local name = arg[1] or "world"]==]

D["_ENV"] = [==[
_ENV

Name of the upvalue through which every free name in a chunk is resolved;
by default it is the global table _G. Declaring `local _ENV = t` makes
global accesses in that scope go to t.]==]

---------------------------------------------------------------------------
-- Base library
---------------------------------------------------------------------------

D["_G"] = [==[
_G  (table)

The global environment table; _G._G == _G. Reading or writing fields of
_G is the same as using global variables.]==]

D["_VERSION"] = [==[
_VERSION  (string)

The running interpreter version as a string, "Lua 5.4".]==]

D["assert"] = [==[
assert(v [, message]) -> v, ...

If v is false or nil, raises an error with message (default
"assertion failed!"). Otherwise returns all of its arguments unchanged.
Example: local f = assert(io.open("data.txt"))]==]

D["collectgarbage"] = [==[
collectgarbage([opt [, arg...]]) -> ...

Controls the garbage collector. Options:
 "collect" (default) full cycle; "stop" / "restart" the collector;
 "count" memory in use in KB (float); "step" [size] incremental step, true if a cycle ended;
 "isrunning" boolean; "incremental" [pause, stepmul, stepsize] and
 "generational" [minormul, majormul] switch mode, returning the previous one.]==]

D["dofile"] = [==[
dofile([filename]) -> ...

Loads and runs the Lua file filename (standard input if omitted) and
returns whatever the chunk returns. Errors propagate to the caller.]==]

D["error"] = [==[
error(message [, level])

Raises an error with message as the error object; it never returns.
For string messages, level picks the position added: 1 (default) where
error was called, 2 the caller of that function, 0 none.
Example: error("bad input", 2)]==]

D["getmetatable"] = [==[
getmetatable(object) -> table | nil

Returns the metatable of object, or nil. If the metatable has a
__metatable field, that field's value is returned instead.]==]

D["ipairs"] = [==[
ipairs(t) -> iterator, t, 0

Iterator for `for i, v in ipairs(t)`: visits t[1], t[2], ... and stops
at the first nil value.
Example: for i, v in ipairs{"a", "b"} do print(i, v) end]==]

D["load"] = [==[
load(chunk [, chunkname [, mode [, env]]]) -> function | nil, errmsg

Compiles chunk (a string, or a function returning successive pieces,
ending with "" or nil) into a function without running it. mode is
"t" (text), "b" (binary) or "bt" (default). env, if given, becomes the
chunk's _ENV. On a syntax error returns nil plus a message.
Example: local f = load("return 1 + 2"); print(f())]==]

D["loadfile"] = [==[
loadfile([filename [, mode [, env]]]) -> function | nil, errmsg

Like load, but reads the chunk from filename (standard input if omitted).]==]

D["next"] = [==[
next(table [, index]) -> key, value

Returns the entry after index (the first one if index is nil), or nil
when no entries remain. Traversal order is unspecified. `next(t) == nil`
tests whether t is empty. Do not add new keys during a traversal.]==]

D["pairs"] = [==[
pairs(t) -> next, t, nil

Iterator for `for k, v in pairs(t)` over every key of t, in no
particular order. A __pairs metamethod, if present, supplies the triple.
Example: for k, v in pairs(t) do print(k, v) end]==]

D["pcall"] = [==[
pcall(f, ...) -> true, ... | false, err

Calls f with the given arguments in protected mode. Returns true plus
f's results on success, or false plus the error object on failure.
Example: local ok, err = pcall(error, "boom")]==]

D["print"] = [==[
print(...)

Converts each argument with tostring and writes them separated by tabs,
followed by a newline, to standard output (the cell's output stream in
the kernel). For formatted output use string.format or io.write.]==]

D["rawequal"] = [==[
rawequal(v1, v2) -> boolean

Compares v1 and v2 for equality without calling an __eq metamethod.]==]

D["rawget"] = [==[
rawget(table, index) -> value

Reads table[index] directly, bypassing any __index metamethod.]==]

D["rawlen"] = [==[
rawlen(v) -> integer

Length of a table or string without calling a __len metamethod.]==]

D["rawset"] = [==[
rawset(table, index, value) -> table

Assigns table[index] = value directly, bypassing any __newindex metamethod.]==]

D["require"] = [==[
require(modname) -> module, loaderdata

Loads a module once: returns package.loaded[modname] if already set,
otherwise tries each function in package.searchers (preload, Lua files
on package.path, C libraries on package.cpath), runs the loader found and
caches its result. The second result tells where the module was found.
Example: local json = require("json")]==]

D["select"] = [==[
select(index, ...) -> ...

With a number, returns all extra arguments starting at that position
(negative counts from the end). With "#", returns how many extra
arguments were passed (nils included).
Example: select("#", 1, nil, 3) --> 3]==]

D["setmetatable"] = [==[
setmetatable(table, metatable) -> table

Sets (or, with nil, removes) the metatable of table and returns table.
Fails if the current metatable has a __metatable field. Only tables can
be given metatables from Lua; use debug.setmetatable for other types.]==]

D["tonumber"] = [==[
tonumber(e [, base]) -> number | nil

Converts a string or number to a number, or returns nil if it cannot.
With base (2 to 36) the string is read as an integer numeral in that
base, letters standing for digits 10 and up.
Example: tonumber("ff", 16) --> 255]==]

D["tostring"] = [==[
tostring(v) -> string

Converts any value to a readable string. Uses the __tostring metamethod
if present, or the __name metafield for the type name.]==]

D["type"] = [==[
type(v) -> string

Returns the basic type of v: "nil", "boolean", "number", "string",
"table", "function", "thread" or "userdata". See math.type to tell
integers from floats.]==]

D["xpcall"] = [==[
xpcall(f, msgh, ...) -> true, ... | false, result of msgh

Like pcall, but on error calls msgh(err) before the stack unwinds and
returns its result; useful to attach a traceback.
Example: xpcall(f, debug.traceback)]==]

D["warn"] = [==[
warn(msg1, ...)

Emits a warning built by concatenating the string arguments (written to
standard error). A single argument starting with "@" is a control
message: "@on" enables and "@off" disables warnings.]==]

---------------------------------------------------------------------------
-- coroutine
---------------------------------------------------------------------------

D["coroutine"] = [==[
coroutine  (library)

Collaborative multitasking: a coroutine is a thread of execution that
runs until it yields explicitly. Members: coroutine.create, resume,
yield, wrap, status, running, isyieldable, close.]==]

D["coroutine.close"] = [==[
coroutine.close(co) -> true | false, err

Closes a suspended or dead coroutine, running its pending to-be-closed
variables; it becomes dead. Returns false plus the error object if the
coroutine had died by error or an error occurred while closing.]==]

D["coroutine.create"] = [==[
coroutine.create(f) -> thread

Makes a new coroutine whose body is the function f; it starts suspended.
Run it with coroutine.resume.]==]

D["coroutine.isyieldable"] = [==[
coroutine.isyieldable([co]) -> boolean

Tells whether co (default: the running coroutine) may yield: false for
the main thread or inside a non-yieldable C function.]==]

D["coroutine.resume"] = [==[
coroutine.resume(co, ...) -> true, ... | false, err

Starts or continues co. On first resume the arguments go to its body;
later they become the results of the pending yield. Returns true plus
the values yielded or returned, or false plus an error.]==]

D["coroutine.running"] = [==[
coroutine.running() -> thread, boolean

Returns the running coroutine and true if it is the main thread.]==]

D["coroutine.status"] = [==[
coroutine.status(co) -> string

"running" (it is the caller), "suspended" (yielded or not started),
"normal" (it resumed another coroutine) or "dead" (finished or failed).]==]

D["coroutine.wrap"] = [==[
coroutine.wrap(f) -> function

Creates a coroutine with body f and returns a function that resumes it
on each call, returning the yielded values. Errors are re-raised (and
the coroutine closed) instead of being returned.
Example: for v in coroutine.wrap(function() for i=1,3 do coroutine.yield(i) end end) do print(v) end]==]

D["coroutine.yield"] = [==[
coroutine.yield(...) -> ...

Suspends the running coroutine; its arguments become the extra results
of the resume call. When resumed again, yield returns the values passed
to that resume.]==]

---------------------------------------------------------------------------
-- debug
---------------------------------------------------------------------------

D["debug"] = [==[
debug  (library)

Introspection and hooks; use with care, it can break assumptions about
code. Members: debug.debug, gethook, getinfo, getlocal, getmetatable,
getregistry, getupvalue, getuservalue, setcstacklimit, sethook,
setlocal, setmetatable, setupvalue, setuservalue, traceback, upvalueid,
upvaluejoin.]==]

D["debug.debug"] = [==[
debug.debug()

Interactive prompt: reads lines from standard input and runs each as a
chunk until a line containing only "cont". In the kernel, input comes
from the client's input box or terminal.]==]

D["debug.gethook"] = [==[
debug.gethook([thread]) -> hook, mask, count

Returns the current hook function, its mask string and its count, as
set by debug.sethook.]==]

D["debug.getinfo"] = [==[
debug.getinfo([thread,] f [, what]) -> table | nil

Information about a function or stack level f (1 = caller of getinfo).
what selects fields: "n" name, namewhat; "S" source, short_src, what,
linedefined, lastlinedefined; "l" currentline; "t" istailcall;
"u" nups, nparams, isvararg; "r" ftransfer, ntransfer; "f" func;
"L" activelines. Default: all. Returns nil for an invalid level.]==]

D["debug.getlocal"] = [==[
debug.getlocal([thread,] f, local) -> name, value

Name and value of local variable number local at stack level f, or nil.
Negative indices address vararg values. If f is a function, returns only
the names of its parameters.]==]

D["debug.getmetatable"] = [==[
debug.getmetatable(value) -> table | nil

Returns the metatable of any value, ignoring a __metatable field.]==]

D["debug.getregistry"] = [==[
debug.getregistry() -> table

Returns the registry table used by C code to store private values.]==]

D["debug.getupvalue"] = [==[
debug.getupvalue(f, up) -> name, value

Name and value of upvalue number up of function f, or nil if there is
none. For C functions the name is "".]==]

D["debug.getuservalue"] = [==[
debug.getuservalue(u, n) -> value, boolean

Returns the n-th user value attached to full userdata u, and false as
second result if that user value does not exist.]==]

D["debug.setcstacklimit"] = [==[
debug.setcstacklimit(limit) -> integer

Deprecated compatibility function. Since Lua 5.4.3 it no longer changes
anything (the C-call limit is fixed at build time).]==]

D["debug.sethook"] = [==[
debug.sethook([thread,] hook, mask [, count])

Installs hook(event, line). mask may hold "c" (call), "r" (return),
"l" (new line); count > 0 also fires every count instructions.
Events: "call", "tail call", "return", "line", "count".
Calling with no arguments removes the hook.]==]

D["debug.setlocal"] = [==[
debug.setlocal([thread,] level, local, value) -> name | nil

Assigns value to local variable number local at stack level level.
Returns the variable's name, or nil if there is no such local.]==]

D["debug.setmetatable"] = [==[
debug.setmetatable(value, table) -> value

Sets the metatable of any value (table or nil), including the shared
metatable of a basic type such as numbers or strings.]==]

D["debug.setupvalue"] = [==[
debug.setupvalue(f, up, value) -> name | nil

Assigns value to upvalue number up of function f; returns its name, or
nil if there is no such upvalue.]==]

D["debug.setuservalue"] = [==[
debug.setuservalue(udata, value, n) -> udata | nil

Sets the n-th user value of full userdata udata; returns nil if that
slot does not exist.]==]

D["debug.traceback"] = [==[
debug.traceback([thread,] [message [, level]]) -> string

Returns message followed by a stack traceback starting at level
(default 1). A non-string, non-nil message is returned unchanged.
Example: xpcall(f, debug.traceback)]==]

D["debug.upvalueid"] = [==[
debug.upvalueid(f, n) -> lightuserdata

Unique identifier of upvalue n of f; closures sharing an upvalue
return the same identifier.]==]

D["debug.upvaluejoin"] = [==[
debug.upvaluejoin(f1, n1, f2, n2)

Makes upvalue n1 of Lua closure f1 refer to upvalue n2 of closure f2.]==]

---------------------------------------------------------------------------
-- io and file methods
---------------------------------------------------------------------------

D["io"] = [==[
io  (library)

File input and output. Members: io.open, io.close, io.read, io.write,
io.lines, io.input, io.output, io.flush, io.popen, io.tmpfile, io.type,
io.stdin, io.stdout, io.stderr. File handles have methods file:read,
file:write, file:lines, file:seek, file:setvbuf, file:flush, file:close.
In llmspell, io.read/io.lines()/io.stdin read the client's input: the
terminal or pipe of `llmspell run`, or the notebook's input box.]==]

D["file"] = [==[
file  (file handle)

Object returned by io.open, io.popen, io.tmpfile. Methods: file:read,
file:write, file:lines, file:seek, file:setvbuf, file:flush, file:close.
Handles are closed when collected, but closing explicitly is better.]==]

D["io.close"] = [==[
io.close([file]) -> true | nil, err

Closes file, or the default output file when omitted. Same as file:close().]==]

D["io.flush"] = [==[
io.flush()

Flushes buffered writes of the default output file.]==]

D["io.input"] = [==[
io.input([file]) -> file

Sets the default input file (a file name opened in text mode, or a
handle) and returns it; with no argument just returns the current one.]==]

D["io.lines"] = [==[
io.lines([filename, ...]) -> iterator

Without a file name, iterates over lines of the default input (in
llmspell: the client's input). With a file name, opens it, iterates and
closes it at the end. Extra arguments are read formats, as in io.read.
Example: for line in io.lines("data.txt") do print(line) end]==]

D["io.open"] = [==[
io.open(filename [, mode]) -> file | nil, err, code

Opens a file. mode: "r" (default), "w", "a", "r+", "w+", "a+", optionally
followed by "b" for binary. On failure returns nil and a message.
Example: local f = assert(io.open("out.txt", "w"))]==]

D["io.output"] = [==[
io.output([file]) -> file

Sets the default output file (a file name opened in write mode, or a
handle) and returns it; with no argument just returns the current one.]==]

D["io.popen"] = [==[
io.popen(prog [, mode]) -> file | nil, err

Runs the shell command prog and returns a handle to read its output
(mode "r", default) or write to its input ("w"). Closing the handle
returns the command's exit status like os.execute.
Example: local out = io.popen("ls"):read("a")]==]

D["io.read"] = [==[
io.read(...) -> ...

Reads from the default input according to formats: "l" next line
without newline (default), "L" line with newline, "n" a number, "a" the
rest of the input, or an integer byte count. Returns nil at end of
input. In llmspell the input is the client's: the terminal or pipe of
`llmspell run`, or the notebook's input box.]==]

D["io.tmpfile"] = [==[
io.tmpfile() -> file

Opens a new temporary file in update mode; it is removed when the
program ends.]==]

D["io.type"] = [==[
io.type(obj) -> "file" | "closed file" | nil

Tells whether obj is an open file handle, a closed one, or not a file.]==]

D["io.write"] = [==[
io.write(...) -> file | nil, err

Writes strings or numbers to the default output without separators or
newline. Same as io.output():write(...).
Example: io.write("x = ", 42, "\n")]==]

D["io.stdin"] = [==[
io.stdin  (file)

Standard input handle. In llmspell it reads the client's input: the
terminal or pipe of `llmspell run`, or the notebook's input box.]==]

D["io.stdout"] = [==[
io.stdout  (file)

Standard output handle; in the kernel, writes go to the cell's output.]==]

D["io.stderr"] = [==[
io.stderr  (file)

Standard error handle; in the kernel, writes go to the cell's stderr stream.]==]

D["file:close"] = [==[
file:close() -> true | nil, err

Closes the file. For a handle from io.popen, returns the command's exit
status like os.execute.]==]

D["file:flush"] = [==[
file:flush() -> file | nil, err

Writes any buffered data of file to the underlying file.]==]

D["file:lines"] = [==[
file:lines(...) -> iterator

Iterator reading file with the given formats (default "l") on each
step. Unlike io.lines, it does not close the file at the end.
Example: for n in f:lines("n") do sum = sum + n end]==]

D["file:read"] = [==[
file:read(...) -> ...

Reads according to formats: "l" line without newline (default), "L" line
with newline, "n" numeral, "a" everything left, or an integer count of
bytes (0 tests for end of file). Returns nil for a format that fails.
Example: local data = f:read("a")]==]

D["file:seek"] = [==[
file:seek([whence [, offset]]) -> position | nil, err

Moves to offset relative to whence: "set" (start), "cur" (default) or
"end", and returns the resulting position from the start. f:seek("end")
gives the file size; f:seek("set") rewinds.]==]

D["file:setvbuf"] = [==[
file:setvbuf(mode [, size]) -> true | nil, err

Buffering mode: "no" (unbuffered), "full" (flush when full or on
demand) or "line" (flush at each newline). size is the buffer size.]==]

D["file:write"] = [==[
file:write(...) -> file | nil, err

Writes each string or number argument to file; returns file so calls
can be chained.
Example: f:write("a", 1, "\n"):write("more")]==]

---------------------------------------------------------------------------
-- math
---------------------------------------------------------------------------

D["math"] = [==[
math  (library)

Mathematical functions and constants. Members: abs, ceil, floor, fmod,
modf, max, min, sqrt, exp, log, sin, cos, tan, asin, acos, atan, deg,
rad, random, randomseed, tointeger, type, ult, pi, huge, maxinteger,
mininteger (plus deprecated atan2, cosh, sinh, tanh, pow, log10, frexp,
ldexp when built with 5.3 compatibility). Integers and floats are distinct.]==]

D["math.abs"] = [==[
math.abs(x) -> number

Absolute value of x, keeping its integer/float subtype.]==]

D["math.acos"] = [==[
math.acos(x) -> float

Arc cosine of x, in radians.]==]

D["math.asin"] = [==[
math.asin(x) -> float

Arc sine of x, in radians.]==]

D["math.atan"] = [==[
math.atan(y [, x]) -> float

Arc tangent of y/x in radians, using both signs to find the quadrant
(so x may be 0). x defaults to 1.
Example: math.atan(1, -1) --> 2.356...]==]

D["math.ceil"] = [==[
math.ceil(x) -> integer

Smallest integral value >= x (an integer when it fits).]==]

D["math.cos"] = [==[
math.cos(x) -> float

Cosine of x (radians).]==]

D["math.deg"] = [==[
math.deg(x) -> float

Converts angle x from radians to degrees.]==]

D["math.exp"] = [==[
math.exp(x) -> float

e raised to the power x.]==]

D["math.floor"] = [==[
math.floor(x) -> integer

Largest integral value <= x (an integer when it fits).]==]

D["math.fmod"] = [==[
math.fmod(x, y) -> number

Remainder of x / y with the quotient rounded toward zero (sign follows
x, unlike the % operator).]==]

D["math.huge"] = [==[
math.huge  (float)

Positive infinity (a float larger than any other number).]==]

D["math.log"] = [==[
math.log(x [, base]) -> float

Logarithm of x in base (default e, the natural logarithm).
Example: math.log(8, 2) --> 3.0]==]

D["math.max"] = [==[
math.max(x, ...) -> number

Largest of its arguments, compared with <.]==]

D["math.maxinteger"] = [==[
math.maxinteger  (integer)

Largest representable integer, 2^63 - 1 = 9223372036854775807.]==]

D["math.min"] = [==[
math.min(x, ...) -> number

Smallest of its arguments, compared with <.]==]

D["math.mininteger"] = [==[
math.mininteger  (integer)

Smallest representable integer, -2^63 = -9223372036854775808.]==]

D["math.modf"] = [==[
math.modf(x) -> number, float

Splits x into its integral part (rounded toward zero; an integer when it
fits) and its fractional part (a float).
Example: math.modf(3.7) --> 3  0.7]==]

D["math.pi"] = [==[
math.pi  (float)

The constant pi, 3.141592653589793.]==]

D["math.rad"] = [==[
math.rad(x) -> float

Converts angle x from degrees to radians.]==]

D["math.random"] = [==[
math.random([m [, n]]) -> number

No arguments: uniform float in [0, 1). math.random(n): integer in
[1, n]. math.random(m, n): integer in [m, n]. math.random(0): integer
with all bits random. Uses xoshiro256**; not for cryptography.]==]

D["math.randomseed"] = [==[
math.randomseed([x [, y]]) -> x, y

Seeds the pseudo-random generator. With arguments, equal seeds give
equal sequences; without, a fairly random seed is chosen. Returns the
two seed components used.]==]

D["math.sin"] = [==[
math.sin(x) -> float

Sine of x (radians).]==]

D["math.sqrt"] = [==[
math.sqrt(x) -> float

Square root of x (x^0.5 also works).]==]

D["math.tan"] = [==[
math.tan(x) -> float

Tangent of x (radians).]==]

D["math.tointeger"] = [==[
math.tointeger(x) -> integer | nil

Returns x as an integer if it is a number with an exact integer value
(e.g. 3.0), otherwise nil.]==]

D["math.type"] = [==[
math.type(x) -> "integer" | "float" | nil

Subtype of a number; nil if x is not a number.]==]

D["math.ult"] = [==[
math.ult(m, n) -> boolean

True if integer m is below n when both are compared as unsigned.]==]

D["math.atan2"] = [==[
math.atan2(y, x) -> float

Deprecated (5.3 compatibility): same as math.atan(y, x).]==]

D["math.cosh"] = [==[
math.cosh(x) -> float

Deprecated (5.3 compatibility): hyperbolic cosine of x.]==]

D["math.sinh"] = [==[
math.sinh(x) -> float

Deprecated (5.3 compatibility): hyperbolic sine of x.]==]

D["math.tanh"] = [==[
math.tanh(x) -> float

Deprecated (5.3 compatibility): hyperbolic tangent of x.]==]

D["math.pow"] = [==[
math.pow(x, y) -> float

Deprecated (5.3 compatibility): x raised to y; use x ^ y.]==]

D["math.log10"] = [==[
math.log10(x) -> float

Deprecated (5.3 compatibility): base-10 logarithm; use math.log(x, 10).]==]

D["math.frexp"] = [==[
math.frexp(x) -> m, e

Deprecated (5.3 compatibility): splits x into mantissa m in [0.5, 1)
and integer exponent e such that x = m * 2^e.]==]

D["math.ldexp"] = [==[
math.ldexp(m, e) -> float

Deprecated (5.3 compatibility): returns m * 2^e.]==]

---------------------------------------------------------------------------
-- os
---------------------------------------------------------------------------

D["os"] = [==[
os  (library)

Operating-system facilities. Members: os.clock, os.date, os.difftime,
os.execute, os.exit, os.getenv, os.remove, os.rename, os.setlocale,
os.time, os.tmpname. Note: os.exit is refused in the shared kernel session.]==]

D["os.clock"] = [==[
os.clock() -> float

CPU time used by the process, in seconds. Good for timing code.
Example: local t0 = os.clock(); work(); print(os.clock() - t0)]==]

D["os.date"] = [==[
os.date([format [, time]]) -> string | table

Formats time (default: now) with strftime-style format (default "%c").
A leading "!" means UTC. "*t" (or "!*t") returns a table with year,
month, day, hour, min, sec, wday, yday, isdst.
Example: os.date("%Y-%m-%d %H:%M")]==]

D["os.difftime"] = [==[
os.difftime(t2, t1) -> float

Number of seconds from time t1 to time t2.]==]

D["os.execute"] = [==[
os.execute([command]) -> true | nil, "exit" | "signal", code

Runs command in the system shell. Returns true on exit status 0, plus
how it ended and the exit code or signal. With no command, tells
whether a shell is available.]==]

D["os.exit"] = [==[
os.exit([code [, close]])

Ends the program with code (true = success, default; false = failure;
or a number). close = true closes the Lua state first.
llmspell: in the shared kernel session os.exit is refused (raises an
error); stop the kernel with `llmspell kernel stop`. Under
`llmspell run` it ends the script with that exit code.]==]

D["os.getenv"] = [==[
os.getenv(varname) -> string | nil

Value of environment variable varname, or nil if it is not set.]==]

D["os.remove"] = [==[
os.remove(filename) -> true | nil, err, code

Deletes a file (or an empty directory on POSIX).]==]

D["os.rename"] = [==[
os.rename(oldname, newname) -> true | nil, err, code

Renames or moves a file or directory.]==]

D["os.setlocale"] = [==[
os.setlocale([locale [, category]]) -> string | nil

Sets the C locale for category ("all" default, "collate", "ctype",
"monetary", "numeric", "time"). "" selects the system default; nil only
queries. Returns the new locale name, or nil on failure.]==]

D["os.time"] = [==[
os.time([t]) -> integer

Current time as a timestamp, or the time described by table t (fields
year, month, day required; hour default 12, min, sec, isdst optional).
Example: os.time{year=2024, month=1, day=1, hour=0}]==]

D["os.tmpname"] = [==[
os.tmpname() -> string

Returns a name usable for a temporary file (the file is not removed
automatically). io.tmpfile is usually safer.]==]

---------------------------------------------------------------------------
-- package
---------------------------------------------------------------------------

D["package"] = [==[
package  (library)

Module loading support used by require. Members: package.path,
package.cpath, package.loaded, package.preload, package.searchers,
package.searchpath, package.config, package.loadlib.]==]

D["package.config"] = [==[
package.config  (string)

Five lines describing path conventions: directory separator ("/"),
template separator (";"), substitution mark ("?"), executable-directory
mark ("!") and ignore mark ("-").]==]

D["package.cpath"] = [==[
package.cpath  (string)

Templates, separated by ";", where require looks for C libraries; each
"?" is replaced by the module name (dots become directory separators).
Initialised from LUA_CPATH_5_4 or LUA_CPATH.]==]

D["package.loaded"] = [==[
package.loaded  (table)

Cache of loaded modules used by require: package.loaded[name] holds
what the module returned. Set an entry to nil to force a reload.]==]

D["package.loadlib"] = [==[
package.loadlib(libname, funcname) -> function | nil, err, where

Dynamically links the C library libname. Returns the C function
funcname as a Lua function; with funcname "*" it only links the library
(making its symbols available) and returns true.]==]

D["package.path"] = [==[
package.path  (string)

Templates, separated by ";", where require looks for Lua modules, e.g.
"./?.lua;./?/init.lua". Initialised from LUA_PATH_5_4 or LUA_PATH.
Example: package.path = "lib/?.lua;" .. package.path]==]

D["package.preload"] = [==[
package.preload  (table)

Loader functions for specific modules: require(name) first checks
package.preload[name] and calls it if present.]==]

D["package.searchers"] = [==[
package.searchers  (table)

Array of searcher functions that require tries in order. Defaults:
preload table, Lua file on package.path, C library on package.cpath,
and all-in-one C library for submodules. Each returns a loader or a
string explaining why it failed.]==]

D["package.searchpath"] = [==[
package.searchpath(name, path [, sep [, rep]]) -> filename | nil, err

Finds name along the ";"-separated templates of path and returns the
first readable file. sep (default ".") in name is replaced by rep
(default the directory separator).
Example: package.searchpath("a.b", package.path)]==]

---------------------------------------------------------------------------
-- string
---------------------------------------------------------------------------

D["string"] = [==[
string  (library)

String manipulation; also available as methods, s:upper(). Indices
start at 1 and negative ones count from the end. Members: byte, char,
dump, find, format, gmatch, gsub, len, lower, match, pack, packsize, rep,
reverse, sub, unpack, upper. find/match/gmatch/gsub use Lua patterns
(not regular expressions); see help("string.find") for the syntax.]==]

D["string.byte"] = [==[
string.byte(s [, i [, j]]) -> integer, ...

Numeric codes of characters s[i] .. s[j] (i defaults to 1, j to i).
Example: ("ABC"):byte(1, -1) --> 65 66 67]==]

D["string.char"] = [==[
string.char(...) -> string

Builds a string from byte values (0-255).
Example: string.char(72, 105) --> "Hi"]==]

D["string.dump"] = [==[
string.dump(function [, strip]) -> string

Binary representation of a Lua function, loadable with load. strip =
true drops debug info. Upvalues are not saved.]==]

D["string.find"] = [==[
string.find(s, pattern [, init [, plain]]) -> start, end, captures... | nil

Finds the first match of pattern in s from position init (default 1);
plain = true disables pattern magic. Pattern syntax: . any char;
%a letters %d digits %l lower %u upper %s space %w alnum %x hex %p punct
%c control %g printable (uppercase = complement); [set] [^set]; * + - ?
(- is lazy); ^ $ anchors; ( ) captures, () position; %1 back-reference;
%b() balanced; %f[set] frontier; %. escapes a magic character.]==]

D["string.format"] = [==[
string.format(formatstring, ...) -> string

printf-style formatting. Directives: %d %i integer, %u, %c char, %x %X
%o, %e %E %f %g %G %a %A floats, %s string (via tostring), %q quoted Lua
literal, %% percent; flags, width and precision as in C.
Example: string.format("%-5s|%6.2f", "pi", math.pi)]==]

D["string.gmatch"] = [==[
string.gmatch(s, pattern [, init]) -> iterator

Iterator over successive matches of pattern in s (starting at init),
yielding the captures or the whole match. Uses Lua patterns, see
help("string.find"); "^" is not meaningful here.
Example: for w in s:gmatch("%a+") do print(w) end]==]

D["string.gsub"] = [==[
string.gsub(s, pattern, repl [, n]) -> string, count

Replaces matches of pattern (at most n). repl may be a string (%0 whole
match, %1-%9 captures, %% percent), a table indexed by the first
capture, or a function called with the captures; false/nil keeps the
original. Uses Lua patterns, see help("string.find").
Example: ("hello world"):gsub("o", "0") --> "hell0 w0rld"  2]==]

D["string.len"] = [==[
string.len(s) -> integer

Length of s in bytes (same as #s); embedded zeros count.]==]

D["string.lower"] = [==[
string.lower(s) -> string

Copy of s with uppercase letters turned to lowercase (locale dependent).]==]

D["string.match"] = [==[
string.match(s, pattern [, init]) -> captures... | nil

Returns the captures of the first match of pattern in s (or the whole
match if there are none), or nil. Uses Lua patterns, see
help("string.find").
Example: ("key=val"):match("(%w+)=(%w+)") --> "key"  "val"]==]

D["string.pack"] = [==[
string.pack(fmt, v1, v2, ...) -> string

Serialises values into a binary string. Format letters: < > = endianness,
![n] alignment, b B h H l L j J T i[n] I[n] integers, f d n floats,
s[n] length-prefixed string, z zero-terminated, x padding byte, X align,
spaces ignored.
Example: string.pack("<I4", 1) --> "\1\0\0\0"]==]

D["string.packsize"] = [==[
string.packsize(fmt) -> integer

Size in bytes of a string produced by string.pack with fmt; fmt may not
contain variable-length items ("s" or "z").]==]

D["string.rep"] = [==[
string.rep(s, n [, sep]) -> string

Concatenates n copies of s, separated by sep (default "").
Example: ("ab"):rep(3, ",") --> "ab,ab,ab"]==]

D["string.reverse"] = [==[
string.reverse(s) -> string

s with its bytes in reverse order.]==]

D["string.sub"] = [==[
string.sub(s, i [, j]) -> string

Substring from i to j inclusive (j defaults to -1, the end). Negative
indices count from the end.
Example: ("hello"):sub(2, -2) --> "ell"]==]

D["string.unpack"] = [==[
string.unpack(fmt, s [, pos]) -> values..., nextpos

Decodes values from binary string s (starting at pos, default 1)
according to fmt (see string.pack). The last result is the position
after the data read.]==]

D["string.upper"] = [==[
string.upper(s) -> string

Copy of s with lowercase letters turned to uppercase (locale dependent).]==]

---------------------------------------------------------------------------
-- table
---------------------------------------------------------------------------

D["table"] = [==[
table  (library)

Functions for tables used as arrays (sequences). Members: table.concat,
table.insert, table.move, table.pack, table.remove, table.sort,
table.unpack. They respect metamethods such as __index and __len.]==]

D["table.concat"] = [==[
table.concat(list [, sep [, i [, j]]]) -> string

Joins list[i] .. list[j] (strings or numbers) with sep between them.
Defaults: sep "", i 1, j #list.
Example: table.concat({1, 2, 3}, ", ") --> "1, 2, 3"]==]

D["table.insert"] = [==[
table.insert(list, [pos,] value)

Inserts value at position pos (default: the end, #list + 1), shifting
later elements up.
Example: table.insert(t, 1, "first")]==]

D["table.move"] = [==[
table.move(a1, f, e, t [, a2]) -> a2

Copies a1[f] .. a1[e] to a2[t] ..., where a2 defaults to a1; overlapping
ranges are handled. Returns a2.]==]

D["table.pack"] = [==[
table.pack(...) -> table

Returns a new table with the arguments at 1..n and field n set to the
argument count (nils included).]==]

D["table.remove"] = [==[
table.remove(list [, pos]) -> value

Removes and returns list[pos] (default: the last element), shifting
later elements down.]==]

D["table.sort"] = [==[
table.sort(list [, comp])

Sorts list in place. comp(a, b) must return true when a goes before b
(default <). The sort is not stable.
Example: table.sort(t, function(a, b) return a > b end)]==]

D["table.unpack"] = [==[
table.unpack(list [, i [, j]]) -> ...

Returns list[i], ..., list[j] (defaults 1 and #list).
Example: local a, b = table.unpack({1, 2})]==]

---------------------------------------------------------------------------
-- utf8
---------------------------------------------------------------------------

D["utf8"] = [==[
utf8  (library)

Basic UTF-8 support; positions are byte indices. Members: utf8.char,
utf8.charpattern, utf8.codepoint, utf8.codes, utf8.len, utf8.offset.
"lax" arguments accept surrogates and values up to 2^31.]==]

D["utf8.char"] = [==[
utf8.char(...) -> string

UTF-8 encoding of the given code points, concatenated.
Example: utf8.char(72, 228, 8364) --> "Hä€"]==]

D["utf8.charpattern"] = [==[
utf8.charpattern  (string)

Pattern matching exactly one UTF-8 byte sequence:
"[\0-\x7F\xC2-\xFD][\x80-\xBF]*" (assumes valid UTF-8).
Example: for ch in s:gmatch(utf8.charpattern) do print(ch) end]==]

D["utf8.codepoint"] = [==[
utf8.codepoint(s [, i [, j [, lax]]]) -> integer, ...

Code points of the characters starting between byte positions i and j
(defaults i = 1, j = i). Errors on invalid byte sequences.]==]

D["utf8.codes"] = [==[
utf8.codes(s [, lax]) -> iterator

Iterator for `for pos, code in utf8.codes(s)`, yielding each
character's byte position and code point; errors on invalid UTF-8.]==]

D["utf8.len"] = [==[
utf8.len(s [, i [, j [, lax]]]) -> integer | nil, pos

Number of UTF-8 characters starting between positions i and j
(default whole string). On invalid input returns nil and the position
of the first bad byte.]==]

D["utf8.offset"] = [==[
utf8.offset(s, n [, i]) -> integer | nil

Byte position where the n-th character (counted from position i)
starts; negative n counts backwards, n = 0 finds the start of the
character containing byte i.
Example: s:sub(utf8.offset(s, -1)) --> last character]==]

return D
