-- Argo CD health check for kubetune.dev/Trial (docs/argocd.md installs it).
-- Lua 5.1 (Argo CD runs gopher-lua): `obj` is the Trial, the script returns `hs`.
--
--   no status yet, Pending, Running  -> Progressing
--   Waiting                          -> Progressing (its Job waits for Kueue to admit it)
--   Completed, Pruned                -> Healthy     (pruning is the search working)
--   Failed                           -> Degraded    (reason and message)

local hs = {}
local status = obj.status or {}
local phase = status.phase or "Pending"

local function detail(default)
  if status.message ~= nil and status.message ~= "" then
    return status.message
  end
  return default
end

if phase == "Completed" then
  hs.status = "Healthy"
  if status.value ~= nil then
    hs.message = "completed with value " .. tostring(status.value)
  else
    hs.message = "completed"
  end
elseif phase == "Pruned" then
  hs.status = "Healthy"
  hs.message = detail("pruned")
elseif phase == "Failed" then
  hs.status = "Degraded"
  if status.reason ~= nil and status.message ~= nil and status.message ~= "" then
    hs.message = status.reason .. ": " .. status.message
  else
    hs.message = status.reason or detail("the trial failed")
  end
elseif phase == "Waiting" then
  -- Not Suspended: the operator suspends nothing, Kueue admits the Job once the
  -- queue's quota has room, and the trial then runs without anyone acting.
  hs.status = "Progressing"
  hs.message = "waiting for Kueue to admit its Job (quota)"
elseif phase == "Running" then
  hs.status = "Progressing"
  if status.lastStep ~= nil then
    hs.message = detail("running, at step " .. tostring(status.lastStep))
  else
    hs.message = detail("running")
  end
else
  hs.status = "Progressing"
  hs.message = detail("waiting for its pod to start")
end
return hs
