-- Argo CD health check for kubetune.dev/Study (docs/argocd.md installs it).
-- Lua 5.1 (Argo CD runs gopher-lua): `obj` is the Study, the script returns `hs`.
--
--   no status yet, Pending, Running  -> Progressing (progress and best value so far)
--   status older than the spec       -> Progressing (the operator has not seen the edit)
--   Succeeded                        -> Healthy     (the best trial and its value)
--   Failed                           -> Degraded    (why: the Invalid or Failed condition)

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind and c.status == "True" then
      return c
    end
  end
  return nil
end

local function best(spec, status)
  local b = status.bestTrial
  if b ~= nil and b.name ~= nil and b.value ~= nil then
    local metric = "value"
    if spec ~= nil and spec.objective ~= nil and spec.objective.metric ~= nil then
      metric = spec.objective.metric
    end
    return "best trial " .. b.name .. ": " .. metric .. "=" .. tostring(b.value)
  end
  -- Multi-objective Studies have no single best trial, but a Pareto front.
  if status.paretoFrontSize ~= nil then
    return tostring(status.paretoFrontSize) .. " Pareto-optimal trials"
  end
  return nil
end

local function join(parts)
  return table.concat(parts, "; ")
end

local hs = {}
local status = obj.status
local generation = obj.metadata and obj.metadata.generation

if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator to start the Study"
  return hs
end

-- A status written for an older spec says nothing about the current one (raising
-- budget.maxTrials resumes a Succeeded Study; fixing an Invalid one restarts it).
if generation ~= nil and status.observedGeneration ~= nil
    and status.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "the operator has not yet seen generation " .. tostring(generation)
  return hs
end

if status.phase == "Succeeded" then
  local parts = {}
  local done = condition(status, "Completed")
  if done ~= nil and done.message ~= nil and done.message ~= "" then
    table.insert(parts, done.message)
  end
  local b = best(obj.spec, status)
  if b ~= nil then
    table.insert(parts, b)
  end
  hs.status = "Healthy"
  hs.message = join(parts)
  return hs
end

if status.phase == "Failed" then
  -- Invalid first: a spec the operator refuses is the reason, whatever else is set.
  local why = condition(status, "Invalid") or condition(status, "Failed")
  hs.status = "Degraded"
  if why ~= nil and why.message ~= nil and why.message ~= "" then
    hs.message = why.message
  elseif why ~= nil and why.reason ~= nil then
    hs.message = why.reason
  else
    hs.message = "the Study failed"
  end
  return hs
end

-- Pending or Running.
local parts = {}
if status.progress ~= nil then
  table.insert(parts, status.progress .. " trials finished")
end
local counts = status.trials
if counts ~= nil then
  if counts.running ~= nil and counts.running > 0 then
    table.insert(parts, tostring(counts.running) .. " running")
  end
  if counts.waiting ~= nil and counts.waiting > 0 then
    table.insert(parts, tostring(counts.waiting) .. " waiting for quota")
  end
end
local b = best(obj.spec, status)
if b ~= nil then
  table.insert(parts, b .. " so far")
end
hs.status = "Progressing"
if #parts > 0 then
  hs.message = join(parts)
else
  hs.message = status.phase
end
return hs
