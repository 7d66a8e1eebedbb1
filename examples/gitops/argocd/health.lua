-- Argo CD health of signalman's signals (every kind in the signalman.dev group).
-- A signal is an event, not a desired state: Healthy once delivered, Degraded once it has failed
-- for good, Progressing until then, including before the operator has looked at it.
local hs = { status = "Progressing", message = "Waiting for the signalman operator" }

local function condition(status, type_)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c == nil then
    return fallback
  end
  local text = c.reason or fallback
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.message = "Being deleted"
  return hs
end

local st = obj.status
if st == nil then
  return hs
end
-- The API server defaults observedGeneration to 0 until the operator writes a status.
local generation = obj.metadata and obj.metadata.generation or nil
if st.observedGeneration == nil or st.observedGeneration == 0 then
  return hs
end
if generation ~= nil and st.observedGeneration ~= generation then
  hs.message = "The operator has not yet observed generation " .. generation
  return hs
end

if st.phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = describe(condition(st, "Ready"), "Delivered")
elseif st.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = describe(condition(st, "Stalled"), "Failed")
else
  hs.message = describe(condition(st, "Reconciling"), st.phase or "Pending")
end
return hs
