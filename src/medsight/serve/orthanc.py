"""Orthanc triggers medsight: a Lua ``OnStableStudy`` hook (Orthanc's built-in Lua engine, no plugin to install)
that queues each study Orthanc has finished receiving, with the bridge user's token.

The study is then pulled over the service's configured DICOMweb endpoint and SEG/SR are pushed back into it.
When they arrive Orthanc sees the study change and calls the hook again; the service answers that repeat
without new work (a pending pull of the same study is joined; a finished one is recognised by its result key),
so there is no loop.
"""

from __future__ import annotations

import re

from medsight.errors import ConfigError

_LUA = """-- medsight: queue every stable study for triage. Written by `medsight users orthanc-hook`; holds a token:
-- keep this file readable by Orthanc only (chmod 600). Load it with Orthanc's "LuaScripts" option.
local MEDSIGHT = "{url}"
local TOKEN = "{token}"

function OnStableStudy(studyId, tags, metadata)
  local uid = tags["StudyInstanceUID"]
  if uid == nil or uid == "" then
    return
  end
  local ok, answer = pcall(HttpPost, MEDSIGHT .. "/api/v1/studies/pull",
    '{{"study_uid": "' .. uid .. '"}}',
    {{ ["Authorization"] = "Bearer " .. TOKEN, ["Content-Type"] = "application/json" }})
  if ok then
    print("medsight: queued study " .. uid .. ": " .. tostring(answer))
  else
    print("medsight: could not queue study " .. uid .. ": " .. tostring(answer))
  end
end
"""

_URL = re.compile(r"^https?://[A-Za-z0-9.\-\[\]:]+(/[A-Za-z0-9._~/\-]*)?$")
_TOKEN = re.compile(r"^[A-Za-z0-9_\-]+$")


def lua_hook(service_url: str, token: str) -> str:
    """The Lua script for Orthanc; refuses a URL or token that could break out of the Lua string."""
    url = service_url.rstrip("/")
    if not _URL.match(url):
        raise ConfigError(f"service URL {service_url!r} is not a plain http(s)://host[:port][/path] URL")
    if not _TOKEN.match(token):
        raise ConfigError("the token holds characters a medsight token never has")
    return _LUA.format(url=url, token=token)
