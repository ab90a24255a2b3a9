-- The `state` global, for the session and for runs alike: the store's natives (which return ok,
-- value) behind wrappers that raise errors at the caller's line.
local native = ...
local function checked(name, f)
  return function(...)
    local ok, value = f(...)
    if not ok then error(name .. ": " .. tostring(value), 2) end
    return value
  end
end
-- set and clear return nothing (a cell `state.set(k, v)` shows no value).
local function checked_silent(name, f)
  return function(...)
    local ok, value = f(...)
    if not ok then error(name .. ": " .. tostring(value), 2) end
  end
end
return {
  set = checked_silent("state.set", native.set),
  get = checked("state.get", native.get),
  delete = checked("state.delete", native.delete),
  keys = checked("state.keys", native.keys),
  clear = checked_silent("state.clear", native.clear),
  update = checked("state.update", native.update),
}
