-- Argo CD health check for lockstep.dev/PipelineGate (Lua 5.1).
-- Healthy: the gate is open (Ready=True). Degraded: the gate is blocked (Stalled=True: the newest run
-- failed, waiting timed out, or credentials were rejected). Progressing: anything else, including a
-- gate lockstep has not yet looked at since its spec last changed, so a sync wave never passes on a
-- verdict about an older spec. A status without observedGeneration (the CRD's default status, reason
-- NotEvaluated, before lockstep first wrote one) is Progressing too: a gate nobody checked never passes.
local hs = {}

local function condition(conditions, wanted)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == wanted then
      return c
    end
  end
  return nil
end

local function message_of(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local generation = 0
if obj.metadata ~= nil and obj.metadata.generation ~= nil then
  generation = obj.metadata.generation
end

if obj.status == nil or obj.status.observedGeneration == nil or obj.status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for lockstep to observe generation " .. tostring(generation)
  return hs
end

local ready = condition(obj.status.conditions, "Ready")
local stalled = condition(obj.status.conditions, "Stalled")

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = message_of(stalled, message_of(ready, "Gate is blocked"))
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message_of(ready, "Gate is open")
  return hs
end

hs.status = "Progressing"
hs.message = message_of(ready, "Waiting for the gate to open")
return hs
