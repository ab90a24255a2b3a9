-- The kernel's Lua side: value rendering, `display`, `help`, completion, stdin, `state` wrappers.
-- Loaded once per kernel by lua/mod.rs with the natives table `K`; returns `K` with the entry points
-- lua/mod.rs calls.
local K = ...
local DOCS = K.docs
K.docs = nil

local type, pairs, ipairs, tostring, tonumber, select, error, pcall, xpcall =
  type, pairs, ipairs, tostring, tonumber, select, error, pcall, xpcall -- the raw ones, for the kernel
local setmetatable, getmetatable, rawget, next = setmetatable, getmetatable, rawget, next
local sfmt, srep, concat, sort, insert = string.format, string.rep, table.concat, table.sort, table.insert
local traceback = debug.traceback

---------------------------------------------------------------------------------------------------
-- Rendering values as text (execute results, display of plain values)
---------------------------------------------------------------------------------------------------
local ESCAPES = { ['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\t'] = '\\t', ['\r'] = '\\r' }
local function quote(s)
  return '"' .. s:gsub('[%c"\\]', function(c) return ESCAPES[c] or sfmt('\\%d', c:byte()) end) .. '"'
end

local function is_identifier(k)
  return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil
end

local KEY_ORDER = { number = 1, string = 2, boolean = 3 }
local function key_less(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return (KEY_ORDER[ta] or 9) < (KEY_ORDER[tb] or 9) end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

local MAX_ITEMS, MAX_DEPTH, WIDTH = 200, 6, 78

local repr
local function repr_table(t, depth, seen, indent)
  if seen[t] then return "<cycle>" end
  if depth > MAX_DEPTH then return "{...}" end
  seen[t] = true
  local items, n = {}, #t
  for i = 1, math.min(n, MAX_ITEMS) do
    items[#items + 1] = repr(t[i], depth + 1, seen, indent .. "  ")
  end
  local keys = {}
  for k in next, t do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  sort(keys, key_less)
  -- What is cut is said, with the count: `…(+N more)`.
  local total = n + #keys
  for _, k in ipairs(keys) do
    if #items >= MAX_ITEMS then break end
    local ks = is_identifier(k) and k or ("[" .. repr(k, depth + 1, seen, indent) .. "]")
    items[#items + 1] = ks .. " = " .. repr(rawget(t, k), depth + 1, seen, indent .. "  ")
  end
  seen[t] = nil
  if total > #items then items[#items + 1] = "…(+" .. (total - #items) .. " more)" end
  if #items == 0 then return "{}" end
  local flat = "{" .. concat(items, ", ") .. "}"
  if #flat + #indent <= WIDTH and not flat:find("\n", 1, true) then return flat end
  return "{\n" .. indent .. "  " .. concat(items, ",\n" .. indent .. "  ") .. "\n" .. indent .. "}"
end

function repr(v, depth, seen, indent)
  local t = type(v)
  if t == "string" then return quote(v) end
  if t == "table" then
    local mt = getmetatable(v)
    if type(mt) == "table" and (rawget(mt, "__tostring") or rawget(mt, "__name")) then return tostring(v) end
    return repr_table(v, depth or 0, seen or {}, indent or "")
  end
  return tostring(v)
end
K.repr = function(v) return repr(v) end

---------------------------------------------------------------------------------------------------
-- display: rich output
---------------------------------------------------------------------------------------------------
local Displayable = { __name = "displayable" }
Displayable.__index = Displayable
Displayable.__tostring = function(d)
  local mimes = {}
  for m in pairs(d.data) do mimes[#mimes + 1] = m end
  sort(mimes)
  return "<display " .. concat(mimes, ", ") .. ">"
end

local function displayable(mime, value, text)
  return setmetatable({ data = { [mime] = value, ["text/plain"] = text } }, Displayable)
end

local function bundle_of(v)
  if getmetatable(v) == Displayable then return v.data, v.metadata or {} end
  return { ["text/plain"] = repr(v) }, {}
end

local display = {}
-- A terminal shows text/plain: for HTML, its text without the tags (as far as a pattern can tell).
local function html_text(s)
  local text = s:gsub("<[Bb][Rr]%s*/?>", "\n"):gsub("</[Pp]>", "\n"):gsub("<[^>]*>", "")
  text = text:gsub("&lt;", "<"):gsub("&gt;", ">"):gsub("&quot;", '"'):gsub("&#39;", "'"):gsub("&amp;", "&")
  return text
end
function display.html(s) s = tostring(s); return displayable("text/html", s, html_text(s)) end
function display.markdown(s) return displayable("text/markdown", tostring(s), tostring(s)) end
function display.latex(s) return displayable("text/latex", tostring(s), tostring(s)) end
function display.svg(s) return displayable("image/svg+xml", tostring(s), "<SVG image>") end
function display.png(bytes) return displayable("image/png", K.base64(bytes), "<PNG image>") end
function display.jpeg(bytes) return displayable("image/jpeg", K.base64(bytes), "<JPEG image>") end
function display.json(t)
  local d = displayable("application/json", t, repr(t))
  d.json = true
  return d
end
function display.clear(wait) K.publish("clear_output", { wait = wait and true or false }) end

local Handle = { __name = "display handle" }
Handle.__index = Handle
Handle.__tostring = function(h) return "<display handle " .. h.display_id .. ">" end
function Handle:update(v)
  local data, metadata = bundle_of(v)
  K.publish("update_display_data",
    { data = data, metadata = metadata, transient = { display_id = self.display_id } })
  return self
end

local display_counter = 0
setmetatable(display, {
  __call = function(_, v, opts)
    local id = type(opts) == "table" and opts.display_id
    if not id then
      display_counter = display_counter + 1
      id = K.session_id .. "-" .. display_counter
    end
    local data, metadata = bundle_of(v)
    K.publish("display_data", { data = data, metadata = metadata, transient = { display_id = tostring(id) } })
    return setmetatable({ display_id = tostring(id) }, Handle)
  end,
})

---------------------------------------------------------------------------------------------------
-- help and inspection
---------------------------------------------------------------------------------------------------
local LIBS = { "string", "table", "math", "io", "os", "coroutine", "debug", "utf8", "package", "state", "display" }

-- Reverse index from values to documented names, built on first use.
local names_by_value
local function name_of(v)
  if not names_by_value then
    names_by_value = {}
    for name in pairs(DOCS) do
      local lib, field = name:match("^([%w_]+)%.([%w_]+)$")
      local value
      if lib then
        local t = rawget(_G, lib)
        value = type(t) == "table" and rawget(t, field)
      else
        value = rawget(_G, name)
      end
      if value ~= nil and (type(value) == "function" or type(value) == "table") and not names_by_value[value] then
        names_by_value[value] = name
      end
    end
  end
  return names_by_value[v]
end

-- Looks a dotted/colon name up in the globals without running arbitrary code on the way.
local function lookup(path, env)
  local v = env or _G
  for part in path:gmatch("[^%.:]+") do
    if type(v) ~= "table" then
      if type(v) == "string" then v = string else return nil end
    end
    local ok, nv = pcall(function() return v[part] end)
    if not ok then return nil end
    v = nv
  end
  return v
end

local function describe(v)
  local t = type(v)
  if t == "function" then
    local info = debug.getinfo(v, "S")
    if info.what == "C" then return "a built-in function" end
    return sfmt("a Lua function defined at %s:%d", info.short_src, info.linedefined)
  elseif t == "table" then
    local keys = {}
    for k in pairs(v) do if type(k) == "string" then keys[#keys + 1] = k end end
    sort(keys)
    local shown = { sfmt("a table with %d key(s)", #keys) }
    if #keys > 0 then shown[2] = "fields: " .. concat(keys, ", ", 1, math.min(#keys, 60)) end
    return concat(shown, "\n")
  end
  return t .. ": " .. repr(v)
end

local function doc_for(x)
  if type(x) == "string" then
    local text = DOCS[x] or DOCS[x:gsub(":", ".")]
    if text then return text end
    local v = lookup(x)
    if v == nil then return nil end
    local name = name_of(v)
    if name then return DOCS[name] end
    return x .. ": " .. describe(v)
  end
  local name = name_of(x)
  if name then return DOCS[name] end
  if x == nil then return nil end
  return describe(x)
end

local OVERVIEW = [[
llmspell kernel globals (help(name) for any of them, or for any standard library function):
  state     persistent key/value store shared by every client and kernel: state.set, state.get, ...
  display   rich output: display(display.html("<b>hi</b>")), display.markdown, display.png, ...
  help      help(x): documentation for a function, library or name, e.g. help(string.format)
  arg       in `llmspell run SCRIPT ARGS...`: the script's arguments
Standard libraries: string, table, math, io, os, coroutine, debug, utf8, package.]]

local function help(...)
  if select("#", ...) == 0 then K.page(OVERVIEW); return end
  local x = ...
  local text = doc_for(x)
  if not text then
    text = "no documentation for " .. (type(x) == "string" and x or repr(x))
  end
  K.page(text)
end
K.inspect_name = function(name)
  local v = lookup(name)
  if DOCS[name] or DOCS[name:gsub(":", ".")] or v ~= nil then return doc_for(name) end
  return nil
end

---------------------------------------------------------------------------------------------------
-- completion
---------------------------------------------------------------------------------------------------
local KEYWORDS = { "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto", "if",
  "in", "local", "nil", "not", "or", "repeat", "return", "then", "true", "until", "while" }

local function fields(t, out, seen)
  seen = seen or {}
  if type(t) ~= "table" or seen[t] then return out end
  seen[t] = true
  for k in pairs(t) do if is_identifier(k) then out[k] = true end end
  local mt = getmetatable(t)
  if type(mt) == "table" and type(rawget(mt, "__index")) == "table" then fields(rawget(mt, "__index"), out, seen) end
  return out
end

-- What the code being typed declares, read from its text (as IPython completes from the source being
-- edited): locals and function parameters, and for each name what it will hold when that shows in
-- the text: a string literal (string methods), a table constructor (its keys), a required module
-- (the module, if it is loaded already). Nothing here runs the code.
local function declared(code)
  local names, kinds = {}, {}
  local function add(list)
    for name in list:gmatch("[%a_][%w_]*") do
      if name ~= "const" and name ~= "close" then names[name] = true end
    end
  end
  for list in code:gmatch("local%s+([%a_][%w_%s,<>]*)") do
    add((list:gsub("%s+function%s*$", "")))
  end
  for name in code:gmatch("function%s+([%a_][%w_]*)%s*%(") do names[name] = true end
  for params in code:gmatch("function%s*[%w_%.:]*%s*%(([^)]*)%)") do add(params) end
  for list in code:gmatch("for%s+([%a_][%w_%s,]*)%s+in%s") do add(list) end
  for name in code:gmatch("for%s+([%a_][%w_]*)%s*=") do names[name] = true end
  -- `local NAME = <value>` or `NAME = <value>`: what the value is, as far as the text tells.
  for name, rest in code:gmatch("([%a_][%w_]*)%s*=%s*([^=][^\n]*)") do
    local first = rest:sub(1, 1)
    if first == '"' or first == "'" or rest:match("^%[=*%[") then
      kinds[name] = string
    elseif first == "{" then
      local body = rest:match("^%b{}") or rest
      local keys = {}
      for key in body:gmatch("[{,;]%s*([%a_][%w_]*)%s*=") do keys[key] = true end
      kinds[name] = keys
    else
      local module = rest:match("^require%s*%(?%s*[\"']([^\"']+)[\"']")
      if module and package.loaded[module] ~= nil then kinds[name] = package.loaded[module] end
    end
  end
  return names, kinds
end

-- Returns the matches (full replacement text) and the byte length of the completed token.
K.complete = function(before)
  local token = before:match("[%a_][%w_%.:]*$") or ""
  if token == "" then return {}, 0 end
  local base, sep, partial = token:match("^(.*)([%.:])([%w_]*)$")
  local names, kinds = declared(before:sub(1, #before - #token))
  local candidates = {}
  if base then
    local v = lookup(base)
    if v == nil and kinds[base] ~= nil then v = kinds[base] end
    if type(v) == "string" then v = string end
    if sep == ":" then
      local found = fields(v, {})
      for k in pairs(found) do
        local ok, f = pcall(function() return v[k] end)
        if ok and (type(f) == "function" or type(f) == "table") then candidates[#candidates + 1] = k end
      end
    else
      for k in pairs(fields(v, {})) do candidates[#candidates + 1] = k end
    end
  else
    partial = token
    for k in pairs(fields(_G, {})) do candidates[#candidates + 1] = k end
    for k in pairs(names) do candidates[#candidates + 1] = k end
    for _, k in ipairs(KEYWORDS) do candidates[#candidates + 1] = k end
  end
  -- Metamethods (__index, __name...) only when asked for by their prefix.
  local hide_meta = partial:sub(1, 2) ~= "__"
  local matches, prefix = {}, base and (base .. sep) or ""
  for _, k in ipairs(candidates) do
    if k:sub(1, #partial) == partial and not (hide_meta and k:sub(1, 2) == "__") then
      matches[#matches + 1] = prefix .. k
    end
  end
  sort(matches)
  local unique = {}
  for i, m in ipairs(matches) do if m ~= matches[i - 1] then unique[#unique + 1] = m end end
  return unique, #token
end

---------------------------------------------------------------------------------------------------
-- stdout/stderr and stdin as Lua file-like objects
---------------------------------------------------------------------------------------------------
local write = K.write
local File = { __name = "FILE*" }
File.__index = File
File.__tostring = function(f) return "file (" .. f.name .. ")" end
local stdout = setmetatable({ name = "stdout", stream = 1 }, File)
local stderr = setmetatable({ name = "stderr", stream = 2 }, File)
local stdin = setmetatable({ name = "stdin", buffer = "", pos = 1, eof = false }, File)

function File:write(...)
  if not self.stream then return nil, "file is not writable" end
  write(self.stream, ...)
  return self
end
function File:flush() return self end
function File:setvbuf() return true end
function File:close() return nil, "cannot close standard file" end
function File:seek() return nil, "cannot seek on a standard stream", 29 end

-- Pulls more input from the client; false once the input has ended.
local function fill(f)
  if f.eof then return false end
  local kind, data = K.input("")
  if kind == "eof" then f.eof = true; return false end
  if kind == "error" then error(data, 0) end
  if kind == "line" then data = data .. "\n" end
  f.buffer = f.buffer:sub(f.pos) .. data
  f.pos = 1
  return true
end

local function read_line(f, keep)
  while true do
    local nl = f.buffer:find("\n", f.pos, true)
    if nl then
      local line = f.buffer:sub(f.pos, keep and nl or nl - 1)
      f.pos = nl + 1
      return line
    end
    if not fill(f) then
      if f.pos > #f.buffer then return nil end
      local rest = f.buffer:sub(f.pos)
      f.pos = #f.buffer + 1
      return rest
    end
  end
end

local function read_number(f)
  while true do
    local s, e = f.buffer:find("^%s*[^%s]+%s", f.pos)
    if s or f.eof then break end
    if not fill(f) then break end
  end
  local ws, token = f.buffer:match("^(%s*)([^%s]*)", f.pos)
  f.pos = f.pos + #ws + #token
  return tonumber(token)
end

local function read_bytes(f, n)
  while #f.buffer - f.pos + 1 < n and fill(f) do end
  if f.pos > #f.buffer and n > 0 then return nil end
  local s = f.buffer:sub(f.pos, f.pos + n - 1)
  f.pos = f.pos + #s
  return s
end

local function read_all(f)
  if K.line_input() then
    -- Line-based frontends (notebooks, jupyter console) cannot signal end of input: one reply is all.
    if f.pos > #f.buffer then fill(f) end
  else
    while fill(f) do end
  end
  local s = f.buffer:sub(f.pos)
  f.pos = #f.buffer + 1
  return s
end

local function read_one(f, fmt)
  if math.type(fmt) == "integer" or (type(fmt) == "number") then return read_bytes(f, math.tointeger(fmt) or 0) end
  fmt = tostring(fmt):gsub("^%*", "")
  local c = fmt:sub(1, 1)
  if c == "l" then return read_line(f, false)
  elseif c == "L" then return read_line(f, true)
  elseif c == "n" then return read_number(f)
  elseif c == "a" then return read_all(f)
  end
  error("bad argument to 'read' (invalid format)", 3)
end

function File:read(...)
  if self ~= stdin then return nil, "file is not readable" end
  local n = select("#", ...)
  if n == 0 then return read_line(self, false) end
  local out = {}
  for i = 1, n do
    local v = read_one(self, (select(i, ...)))
    out[i] = v
    if v == nil then return table.unpack(out, 1, i) end
  end
  return table.unpack(out, 1, n)
end

function File:lines(...)
  local fmts = table.pack(...)
  return function() return self:read(table.unpack(fmts, 1, fmts.n)) end
end

-- Child processes write straight to the kernel's fds 1 and 2, which the kernel forwards: flush ours
-- first and theirs after, so output stays in order.
local sync_output, raw_execute, raw_popen = K.sync_output, os.execute, io.popen
os.execute = function(...)
  sync_output()
  local a, b, c = raw_execute(...)
  sync_output()
  return a, b, c
end
io.popen = function(...)
  sync_output()
  return raw_popen(...)
end

-- io's default input and output are the client's streams until a cell names others, as in lua:
-- io.output("f.txt") makes io.write write to that file, io.input(file) makes io.read read it.
local real_lines, real_type, real_open, real_close = io.lines, io.type, io.open, io.close
io.stdout, io.stderr, io.stdin = stdout, stderr, stdin
local default_out, default_in = stdout, stdin
local function is_file(f) return getmetatable(f) == File or real_type(f) ~= nil end
local function default_file(f, mode, current, which)
  if f == nil then return current end
  if type(f) == "string" then
    local h, err = real_open(f, mode)
    if not h then error(err, 3) end
    return h
  end
  if not is_file(f) then error("bad argument #1 to '" .. which .. "' (FILE* expected, got " .. type(f) .. ")", 3) end
  return f
end
io.output = function(f) default_out = default_file(f, "w", default_out, "output"); return default_out end
io.input = function(f) default_in = default_file(f, "r", default_in, "input"); return default_in end
io.write = function(...) return default_out:write(...) end
io.read = function(...) return default_in:read(...) end
io.lines = function(filename, ...)
  if filename == nil then return default_in:lines(...) end
  return real_lines(filename, ...)
end
io.close = function(f)
  if f == nil then f = default_out end
  if getmetatable(f) == File then return f:close() end
  return real_close(f)
end
io.type = function(f)
  if getmetatable(f) == File then return "file" end
  return real_type(f)
end
print = K.print
warn = function(msg, ...)
  msg = concat({ msg, ... })
  if msg == "@on" then K.warnings = true elseif msg == "@off" then K.warnings = false
  elseif K.warnings then write(2, "Lua warning: ", msg, "\n") end
end

-- The kernel's own functions keep natives as upvalues: not for user code to take.
local getinfo, raw_getupvalue, raw_setupvalue, raw_upvaluejoin =
  debug.getinfo, debug.getupvalue, debug.setupvalue, debug.upvaluejoin
local function kernel_function(f)
  return type(f) == "function" and getinfo(f, "S").source == "=[llmspell]"
end
debug.getupvalue = function(f, n)
  if kernel_function(f) then return nil end
  return raw_getupvalue(f, n)
end
debug.setupvalue = function(f, n, v)
  if kernel_function(f) then return nil end
  return raw_setupvalue(f, n, v)
end
debug.upvaluejoin = function(f1, n1, f2, n2)
  if kernel_function(f1) or kernel_function(f2) then error("upvaluejoin: kernel functions are sealed", 2) end
  return raw_upvaluejoin(f1, n1, f2, n2)
end

K.reset_stdin = function()
  stdin.buffer, stdin.pos, stdin.eof = "", 1, false
end

---------------------------------------------------------------------------------------------------
-- state: the wrappers of state.lua, so errors point at the caller's line
---------------------------------------------------------------------------------------------------
-- (src/lua/state.lua, loaded by the interpreter before this prelude)
local state = K.state
K.state = nil

---------------------------------------------------------------------------------------------------
-- Globals and os.exit (refused: it would end the kernel for every client)
---------------------------------------------------------------------------------------------------
local function session_exit()
  error("os.exit is disabled in the shared kernel session (it would stop the kernel for every client); " ..
    "use `llmspell kernel stop` to stop the kernel", 2)
end
os.exit = session_exit

_G.state, _G.display, _G.help = state, display, help

-- Runs a compiled cell: returns true, n, results... or false, error value, traceback.
local function handler(e)
  -- An attached debugger may stop here, where the error was raised (break on uncaught errors).
  local on_error = K.debug_on_error
  if on_error then on_error(e) end
  return { err = e, tb = traceback("", 2) }
end
K.run = function(f, ...)
  local r = table.pack(xpcall(f, handler, ...))
  if r[1] then return true, r.n - 1, table.unpack(r, 2, r.n) end
  local e = r[2]
  if type(e) == "table" and e.tb then return false, e.err, e.tb end
  return false, e, ""
end

-- The mime bundle of a cell's values: a displayable value is shown richly, others as text.
K.bundle = function(...)
  local n = select("#", ...)
  if n == 1 then
    local v = ...
    -- `display(x)` as a cell's last line returns its handle: the display itself is the output.
    if getmetatable(v) == Handle then return nil end
    -- `io.write("abc")` returns its file, for chaining: the output is the cell's point, not the handle.
    if getmetatable(v) == File then return nil end
    if getmetatable(v) == Displayable then
      local data = {}
      for k, x in pairs(v.data) do data[k] = x end
      return data, v.json
    end
  end
  local parts = {}
  for i = 1, n do parts[i] = repr((select(i, ...))) end
  return { ["text/plain"] = concat(parts, "\t") }
end

K.describe_error = function(e)
  if type(e) == "string" then return e end
  return repr(e)
end

-- What lua.c's message handler makes of an error value: the text lua prints, and whether a traceback
-- follows it (not when the value's own __tostring gave the text).
local getrawmetatable = debug.getmetatable
K.lua_message = function(e)
  local t = type(e)
  if t == "string" or t == "number" then return tostring(e), true end
  local mt = getrawmetatable(e)
  if mt and rawget(mt, "__tostring") ~= nil then
    local ok, text = pcall(tostring, e)
    if ok and type(text) == "string" then return text, false end
  end
  return "(error object is a " .. t .. " value)", true
end

return K
