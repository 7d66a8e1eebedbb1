-- Argo CD health of signalman's objects (every kind in the signalman.dev group), each by its own rule.
-- A signal (WorkflowSignal, AutomationSignal) is an event, not a desired state: Healthy once
-- delivered, Degraded once it has failed for good, Progressing until then, including before the
-- operator has looked at it. A SignalPolicy is Healthy once the operator has found it valid,
-- Degraded when it cannot be applied. A SignalReceipt, the operator's record of a delivery, is
-- always Healthy.
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

local kind = obj.kind or ""

if kind == "SignalReceipt" then
  hs.status = "Healthy"
  if obj.spec ~= nil and obj.spec.deliveredAt ~= nil then
    hs.message = "Delivered at " .. obj.spec.deliveredAt
  else
    hs.message = "Attempt recorded; the operator verifies its outcome"
  end
  return hs
end

if kind ~= "WorkflowSignal" and kind ~= "AutomationSignal" and kind ~= "SignalPolicy" then
  -- A kind newer than this script: what Argo CD shows without a health check.
  hs.status = "Healthy"
  hs.message = "No health check for " .. kind .. " in this script"
  return hs
end

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.message = "Being deleted"
  return hs
end

local st = obj.status
if st == nil then
  return hs
end
-- The API server defaults a signal's observedGeneration to 0 until the operator writes a status.
local generation = obj.metadata and obj.metadata.generation or nil
if st.observedGeneration == nil or st.observedGeneration == 0 then
  return hs
end
if generation ~= nil and st.observedGeneration ~= generation then
  hs.message = "The operator has not yet observed generation " .. generation
  return hs
end

if kind == "SignalPolicy" then
  local valid = condition(st, "Valid")
  if valid == nil then
    hs.message = "Waiting for the operator to validate the policy"
  elseif valid.status == "True" then
    hs.status = "Healthy"
    hs.message = describe(valid, "Valid") .. " (namespaces selected: " .. (st.selectedNamespaces or 0) .. ")"
  else
    hs.status = "Degraded"
    hs.message = describe(valid, "Invalid")
  end
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
