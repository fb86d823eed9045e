-- Argo CD health check for lockstep.dev/ServiceTrace (Lua 5.1).
-- Healthy: the cluster runs the manifest head produced from the newest successful build (Ready=True).
-- Degraded: a stage failed or a reference cannot be read (Stalled=True). Progressing: anything else,
-- including a trace lockstep has not yet looked at since its spec last changed, and one it never evaluated
-- (the CRD's default status has no observedGeneration).
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
  hs.message = message_of(stalled, message_of(ready, "Trace is stalled"))
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = message_of(ready, "The cluster runs the newest build")
  return hs
end

hs.status = "Progressing"
hs.message = message_of(ready, "Change is on its way to the cluster")
return hs
