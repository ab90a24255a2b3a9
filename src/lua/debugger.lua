-- The debugger's Lua side (src/lua/debug_hook.rs calls it): what a stopped program looks like to a DAP
-- client (frames, scopes, variables), evaluation in a frame, breakpoint conditions and log messages, and
-- the requests that read the session while nothing runs (inspectVariables, richInspectVariables,
-- copyToGlobals, evaluate). Everything here runs with hooks off (Lua disables them inside a hook).
--
-- Replies are JSON text (encoded here: an empty Lua table cannot tell `[]` from `{}`).
local N = ... -- natives: wait(), respond(id, ok, json), event(name, json), repr(v), builtins (set),
-- pcall (the library's: the session's may stop on caught errors)
local getinfo, getlocal, setlocal = debug.getinfo, debug.getlocal, debug.setlocal
local getupvalue, setupvalue = debug.getupvalue, debug.setupvalue
local type, pairs, tostring, pcall, load, select = type, pairs, tostring, N.pcall or pcall, load, select
local sfmt, concat, sort = string.format, table.concat, table.sort
local ipairs, next, rawget, setmetatable, getmetatable, tonumber, error =
  ipairs, next, rawget, setmetatable, getmetatable, tonumber, error
local MAIN = coroutine.running()
local G = _G

local D = {}

---------------------------------------------------------------------------------------------------
-- JSON text
---------------------------------------------------------------------------------------------------
local ARRAY = {}
local function array(t) return setmetatable(t or {}, ARRAY) end
local ESC = { ['"'] = '\\"', ['\\'] = '\\\\', ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }
local function json(v)
  local t = type(v)
  if t == "nil" then return "null" end
  if t == "boolean" then return tostring(v) end
  if t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    if math.type(v) == "integer" then return tostring(v) end
    return sfmt("%.17g", v)
  end
  if t == "string" then
    return '"' .. v:gsub('[%c"\\]', function(c) return ESC[c] or sfmt("\\u%04x", c:byte()) end) .. '"'
  end
  local out = {}
  if getmetatable(v) == ARRAY then
    for i = 1, #v do out[i] = json(v[i]) end
    return "[" .. concat(out, ",") .. "]"
  end
  for k, x in pairs(v) do out[#out + 1] = json(tostring(k)) .. ":" .. json(x) end
  return "{" .. concat(out, ",") .. "}"
end

---------------------------------------------------------------------------------------------------
-- Where the stopped program is. `enter` is the anchor: every call from the hook (or from the error
-- handler) goes through it, so a frame's stack level is found from any depth by looking for it.
---------------------------------------------------------------------------------------------------
local stop = { skip = 0, frames = nil } -- frames: {offset=} on this thread, or {co=, level=} on main
local refs, nrefs = {}, 0               -- variablesReference -> what it shows; cleared on each stop

-- The level (as seen by the caller of `level_of`) of frame `offset` above `enter`.
local function level_of(offset)
  for l = 2, 10000 do
    local info = getinfo(l, "f")
    if not info then return nil end
    -- l is a level as seen from here; one less as the caller sees it, and the frame is one above.
    if info.func == D.enter then return l + stop.skip + offset end
  end
end

local function new_ref(what)
  nrefs = nrefs + 1
  refs[nrefs] = what
  return nrefs
end

local function clear_refs() refs, nrefs = {}, 0 end

-- The frames of the stopped thread, then (when that is a coroutine) those of the main thread.
local function collect_frames()
  local frames = {}
  local base = level_of(0)
  local offset = 0
  -- The top frames of an error stop are the handler's machinery: start at the first Lua frame.
  if stop.skip > 0 then
    while true do
      local info = getinfo(base + offset, "S")
      if not info or info.what ~= "C" then break end
      offset = offset + 1
    end
  end
  -- Down to the kernel's own code that runs the cell (not the user's to see).
  local function users(info) return info and info.source ~= "=[llmspell]" end
  while users(getinfo(base + offset, "S")) do
    frames[#frames + 1] = { offset = offset, c = getinfo(base + offset, "S").what == "C" }
    offset = offset + 1
  end
  local _, ismain = coroutine.running()
  if not ismain then
    local level = 0
    while users(getinfo(MAIN, level, "S")) do
      frames[#frames + 1] = { co = MAIN, level = level, c = getinfo(MAIN, level, "S").what == "C" }
      level = level + 1
    end
  end
  -- The xpcall that runs the cell is the kernel's too.
  while #frames > 1 and frames[#frames].c do frames[#frames] = nil end
  return frames
end

local function frame_info(f, what)
  if f.co then return getinfo(f.co, f.level, what) end
  return getinfo(level_of(f.offset), what)
end

local function frame_local(f, n)
  if f.co then return getlocal(f.co, f.level, n) end
  return getlocal(level_of(f.offset), n)
end

local function frame_set_local(f, n, v)
  if f.co then return setlocal(f.co, f.level, n, v) end
  return setlocal(level_of(f.offset), n, v)
end

local function path_of(source)
  if source:sub(1, 1) == "@" then return N.canonical(source:sub(2)) end
  return nil
end

---------------------------------------------------------------------------------------------------
-- Values as DAP variables
---------------------------------------------------------------------------------------------------
local function short(v)
  local ok, s = pcall(N.repr, v)
  if not ok then s = "<" .. type(v) .. ">" end
  if #s > 200 then s = s:sub(1, 197) .. "..." end
  return s
end

-- A table's keys in display order: its array part, then the others sorted.
local KEY_ORDER = { number = 1, string = 2, boolean = 3 }
local function sorted_keys(t)
  local n, keys, rest = #t, {}, {}
  for i = 1, n do keys[i] = i end
  for k in next, t do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then rest[#rest + 1] = k end
  end
  sort(rest, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return (KEY_ORDER[ta] or 9) < (KEY_ORDER[tb] or 9) end
    if ta == "number" or ta == "string" then return a < b end
    return tostring(a) < tostring(b)
  end)
  for _, k in ipairs(rest) do keys[#keys + 1] = k end
  return keys, n
end

-- DAP's `type` is free text. JupyterLab's Variables tree shows the value only for the type names it
-- knows (int, float, bool, str, as Python's debugger sends them) and the type name for anything else,
-- so Lua's scalars are named that way; tables, functions, nil and the rest keep Lua's names.
local SCALAR_TYPE = { boolean = "bool", string = "str" }
local function type_name(v)
  local t = type(v)
  if t == "number" then return math.type(v) == "integer" and "int" or "float" end
  return SCALAR_TYPE[t] or t
end

local function variable(name, v, evaluate_name)
  local var = { name = name, value = short(v), type = type_name(v), variablesReference = 0,
    evaluateName = evaluate_name }
  if type(v) == "table" then
    var.variablesReference = new_ref({ table = v })
    local keys, n = sorted_keys(v)
    var.indexedVariables, var.namedVariables = n, #keys - n
  elseif type(v) == "function" then
    local info = getinfo(v, "S")
    if info.what ~= "C" and info.short_src then
      var.value = var.value .. " (" .. info.short_src .. ":" .. info.linedefined .. ")"
    end
  end
  return var
end

local function key_name(k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then return k end
  return "[" .. short(k) .. "]"
end

local function locals_of(f)
  local out, slot = {}, {}
  for n = 1, 10000 do
    local name, v = frame_local(f, n)
    if not name then break end
    if name:sub(1, 1) ~= "(" then out[#out + 1] = { name = name, value = v, n = n }; slot[name] = #out end
  end
  -- A name declared twice (shadowed): the later one is what the code sees.
  local seen, result = {}, {}
  for i = #out, 1, -1 do
    if not seen[out[i].name] then seen[out[i].name] = true; result[#result + 1] = out[i] end
  end
  local reversed = {}
  for i = #result, 1, -1 do reversed[#reversed + 1] = result[i] end
  return reversed
end

local function upvalues_of(f)
  local out = {}
  local info = frame_info(f, "f")
  local fn = info and info.func
  if not fn then return out end
  for n = 1, 255 do
    local name, v = getupvalue(fn, n)
    if not name then break end
    if name ~= "_ENV" and name ~= "" then out[#out + 1] = { name = name, value = v, n = n, fn = fn } end
  end
  return out
end

-- The session's own globals: what the user defined, not the standard library or the kernel's.
local function user_globals()
  local out = {}
  for k, v in pairs(G) do
    if not (N.builtins[k] ~= nil and N.builtins[k] == v) then out[#out + 1] = { name = k, value = v } end
  end
  sort(out, function(a, b) return tostring(a.name) < tostring(b.name) end)
  return out
end

local function page(list, args)
  local start, count = args.start or 0, args.count or 0
  local out = array()
  for i = start + 1, (count > 0) and math.min(#list, start + count) or #list do out[#out + 1] = list[i] end
  return out
end

local function table_children(t, args)
  local keys, n = sorted_keys(t)
  local list = {}
  local filter = args.filter
  for i, k in ipairs(keys) do
    local indexed = i <= n
    if filter == nil or (filter == "indexed") == indexed then list[#list + 1] = k end
  end
  local out = array()
  for _, k in ipairs(page(list, args)) do out[#out + 1] = variable(key_name(k), rawget(t, k)) end
  return out
end

---------------------------------------------------------------------------------------------------
-- Evaluation: an expression (or a statement) with the frame's locals and upvalues in scope
---------------------------------------------------------------------------------------------------
local function scope_env(f)
  if not f then return G end
  local locals, ups = {}, {}
  for _, l in ipairs(locals_of(f)) do locals[l.name] = l end
  for _, u in ipairs(upvalues_of(f)) do ups[u.name] = u end
  return setmetatable({}, {
    __index = function(_, k)
      local l = locals[k]
      if l then local _, v = frame_local(f, l.n); return v end
      local u = ups[k]
      if u then local _, v = getupvalue(u.fn, u.n); return v end
      return G[k]
    end,
    __newindex = function(_, k, v)
      local l = locals[k]
      if l then frame_set_local(f, l.n, v); return end
      local u = ups[k]
      if u then setupvalue(u.fn, u.n, v); return end
      G[k] = v
    end,
  })
end

-- Returns ok, value-or-message (several values are shown as one, comma separated).
local function evaluate(code, f)
  local env = scope_env(f)
  local chunk = load("return " .. code, "=[debug]", "t", env)
  if not chunk then
    local err
    chunk, err = load(code, "=[debug]", "t", env)
    if not chunk then return false, err end
  end
  local r = table.pack(pcall(chunk))
  if not r[1] then return false, tostring(r[2]) end
  if r.n == 1 then return true, nil, 0 end
  return true, r[2], r.n - 1, r
end

local function frame_by_id(id)
  local f = stop.frames and stop.frames[id]
  if not f then error("no frame " .. tostring(id) .. " (the program is not stopped there)", 0) end
  return f
end

---------------------------------------------------------------------------------------------------
-- Requests
---------------------------------------------------------------------------------------------------
local handlers = {}

function handlers.threads()
  return { threads = array({ { id = 1, name = "main" } }) }
end

function handlers.stackTrace(args)
  local frames = stop.frames
  if not frames then error("the program is not stopped", 0) end
  local out = array()
  local start, levels = args.startFrame or 0, args.levels or 0
  for i = start + 1, (levels > 0) and math.min(#frames, start + levels) or #frames do
    local info = frame_info(frames[i], "nSl")
    local name = info.name or (info.what == "main" and "(cell)") or "?"
    if info.what == "C" then name = "[C] " .. (info.name or "?") end
    local frame = { id = i, name = name, line = math.max(info.currentline or 0, 0), column = 1 }
    local path = path_of(info.source)
    if path then
      frame.source = { path = path, name = path:match("[^/]*$") }
    else
      frame.presentationHint = "subtle"
    end
    out[#out + 1] = frame
  end
  return { stackFrames = out, totalFrames = #frames }
end

function handlers.scopes(args)
  local id = args.frameId
  frame_by_id(id)
  return { scopes = array({
    { name = "Locals", presentationHint = "locals", variablesReference = new_ref({ locals = id }), expensive = false },
    { name = "Upvalues", variablesReference = new_ref({ upvalues = id }), expensive = false },
    { name = "Globals", variablesReference = new_ref({ globals = true }), expensive = false },
  }) }
end

function handlers.variables(args)
  local what = refs[args.variablesReference]
  if not what then error("no variables with reference " .. tostring(args.variablesReference), 0) end
  local list
  if what.table then return { variables = table_children(what.table, args) } end
  if what.locals then
    list = locals_of(frame_by_id(what.locals))
  elseif what.upvalues then
    list = upvalues_of(frame_by_id(what.upvalues))
  else
    list = user_globals()
  end
  local out = array()
  for _, item in ipairs(page(list, args)) do out[#out + 1] = variable(tostring(item.name), item.value) end
  return { variables = out }
end

function handlers.setVariable(args)
  local what = refs[args.variablesReference]
  if not what then error("no variables with reference " .. tostring(args.variablesReference), 0) end
  local f = what.locals and frame_by_id(what.locals) or (what.upvalues and frame_by_id(what.upvalues))
  local ok, v = evaluate(args.value, f)
  if not ok then error(v, 0) end
  local name = args.name
  if what.table then
    local key = name:match("^%[(.*)%]$")
    local k = name
    if key then k = math.tointeger(tonumber(key)) or tonumber(key) or key:match('^"(.*)"$') or key end
    what.table[k] = v
  elseif what.locals then
    local done = false
    for _, l in ipairs(locals_of(f)) do
      if l.name == name then frame_set_local(f, l.n, v); done = true end
    end
    if not done then error("no local named " .. name, 0) end
  elseif what.upvalues then
    local done = false
    for _, u in ipairs(upvalues_of(f)) do
      if u.name == name then setupvalue(u.fn, u.n, v); done = true end
    end
    if not done then error("no upvalue named " .. name, 0) end
  else
    G[name] = v
  end
  local var = variable(name, v)
  return { value = var.value, type = var.type, variablesReference = var.variablesReference }
end

function handlers.evaluate(args)
  local f = args.frameId and stop.frames and stop.frames[args.frameId] or nil
  if args.frameId and stop.frames and not f then error("no frame " .. tostring(args.frameId), 0) end
  local ok, v, n, all = evaluate(args.expression or "", f)
  if not ok then error(v, 0) end
  if n == 0 then return { result = "", variablesReference = 0 } end
  if n > 1 then
    local parts = {}
    for i = 2, all.n do parts[#parts + 1] = short(all[i]) end
    return { result = concat(parts, ", "), variablesReference = 0 }
  end
  local var = variable("", v)
  return { result = var.value, type = var.type, variablesReference = var.variablesReference }
end

function handlers.inspectVariables()
  local out = array()
  for _, g in ipairs(user_globals()) do out[#out + 1] = variable(tostring(g.name), g.value) end
  return { variables = out }
end

function handlers.richInspectVariables(args)
  local name = args.variableName or ""
  local f = args.frameId and stop.frames and stop.frames[args.frameId] or nil
  local ok, v = evaluate(name, f)
  if not ok then error(v, 0) end
  local data = { ["text/plain"] = short(v) }
  local ok2, full = pcall(N.repr, v)
  if ok2 then data["text/plain"] = full end
  if type(v) == "table" and getmetatable(v) == nil then
    local rows = {}
    local keys = sorted_keys(v)
    for i = 1, math.min(#keys, 500) do
      local k = keys[i]
      local cell = short(rawget(v, k)):gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;")
      local key = short(k):gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;")
      rows[#rows + 1] = "<tr><td>" .. key .. "</td><td>" .. cell .. "</td></tr>"
    end
    data["text/html"] = "<table><thead><tr><th>key</th><th>value</th></tr></thead><tbody>" ..
      concat(rows) .. "</tbody></table>"
  end
  return { data = data, metadata = {} }
end

function handlers.copyToGlobals(args)
  local f = frame_by_id(args.srcFrameId)
  local ok, v = evaluate(args.srcVariableName, f)
  if not ok then error(v, 0) end
  G[args.dstVariableName] = v
  return {}
end

-- The Lua modules loaded (package.loaded), with their files where package.path finds them.
function handlers.modules(args)
  local names = {}
  for name in pairs(package.loaded) do
    if type(name) == "string" then names[#names + 1] = name end
  end
  sort(names)
  local list = {}
  for _, name in ipairs(names) do
    local module = { id = name, name = name }
    local file = package.searchpath(name, package.path)
    if file then module.path = N.canonical(file) end
    list[#list + 1] = module
  end
  return { modules = page(list, { start = args.startModule, count = args.moduleCount }), totalModules = #list }
end

function handlers.exceptionInfo()
  return { exceptionId = "error", description = stop.text or "", breakMode = "unhandled" }
end

local function handle(cmd)
  local h = handlers[cmd.command]
  if not h then error("llmspell cannot answer " .. tostring(cmd.command) .. " here", 0) end
  return h(cmd.arguments or {})
end

local RESUME = { continue = true, next = true, stepIn = true, stepOut = true, disconnect = true,
  __resume = true }

---------------------------------------------------------------------------------------------------
-- Entry points
---------------------------------------------------------------------------------------------------
-- From the hook (or the error handler): `stop` serves requests until the client resumes and returns
-- how ("continue", "next", "stepIn", "stepOut"); `condition` and `log` evaluate in the running frame.
function D.enter(kind, text, skip)
  if kind == "condition" then
    stop.skip = 0
    local ok, v = evaluate(text, { offset = 0 })
    return ok and v ~= nil and v ~= false
  elseif kind == "log" then
    stop.skip = 0
    local f = { offset = 0 }
    return (text:gsub("{(.-)}", function(expr)
      local ok, v = evaluate(expr, f)
      if not ok then return "{" .. tostring(v) .. "}" end
      return type(v) == "string" and v or short(v)
    end))
  end
  stop.skip, stop.text = skip or 0, text
  clear_refs()
  stop.frames = collect_frames()
  while true do
    local cmd = N.wait()
    if RESUME[cmd.command] then
      stop.frames = nil
      clear_refs()
      return cmd.command
    end
    local ok, body = pcall(handle, cmd)
    N.respond(cmd.id, ok, ok and json(body) or tostring(body))
  end
end

-- While nothing runs: the same requests, on the session's globals.
function D.idle(cmd)
  if cmd.command == "inspectVariables" then clear_refs() end
  local ok, body = pcall(handle, cmd)
  return ok, ok and json(body) or tostring(body)
end

return D
