"""The code the host sends, as a silent ``execute_request``, to turn a kernel into a worker.

If the kernel can import this package at the same protocol version it uses it;
otherwise the agent's modules travel as source and are installed under their own names,
so that pickles naming ``elsewhere.kernel.serialize`` resolve on both sides. The sources
(a large cell for IPython to transform and compile) go only in a second request, when
the first one says the import failed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from . import agent

__all__ = ["bootstrap_code", "INFO_NAME"]

#: The worker-side name holding the agent's answer, read back with ``user_expressions``.
INFO_NAME = "_elsewhere_agent_info"
_SHIPPED = ("channel", "stream", "serialize", "taskoutput", "proxy_files", "proxy_os", "proxy_subprocess", "proxy", "agent")

_TEMPLATE = """
def _elsewhere_boot(sources, force_source, hwm, route, protocol, python):
    import socket, sys, types
    if list(sys.version_info[:2]) != python[:2]:
        # Code travels as bytecode: refuse before installing anything.
        return {{"python": list(sys.version_info[:3]), "host": socket.gethostname()}}
    agent = None
    if not force_source:
        try:
            from elsewhere.kernel import agent
            if agent.PROTOCOL != protocol:
                agent = None
        except ImportError:
            agent = None
    if agent is None and sources is None:
        return {{"need_sources": True}}
    if agent is None:
        for name in ("elsewhere", "elsewhere.kernel"):
            package = sys.modules.get(name) if not force_source else None
            if package is None:
                package = types.ModuleType(name)
                package.__path__ = []
                sys.modules[name] = package
        for short, source in sources:
            name = "elsewhere.kernel." + short
            module = types.ModuleType(name)
            module.__file__ = "<elsewhere " + short + ">"
            module.__package__ = "elsewhere.kernel"
            sys.modules[name] = module
            setattr(sys.modules["elsewhere.kernel"], short, module)
            exec(compile(source, module.__file__, "exec"), module.__dict__)
        agent = sys.modules["elsewhere.kernel.agent"]
    return agent.start(hwm=hwm, route=route)
{info} = _elsewhere_boot({sources}, {force}, {hwm}, {route!r}, {protocol}, {python})
del _elsewhere_boot
"""


def bootstrap_code(*, hwm: int = 0, route: str = "zmq", force_source: bool = False, sources: bool = False) -> str:
    """Python source that starts the agent in a kernel and leaves its info in ``INFO_NAME``.

    Without ``sources`` the info is ``{"need_sources": True}`` when the kernel cannot
    import the agent: ask again with them.
    """
    here = Path(__file__).parent
    shipped = [(name, (here / f"{name}.py").read_text()) for name in _SHIPPED] if sources or force_source else None
    return _TEMPLATE.format(
        info=INFO_NAME,
        sources=json.dumps(shipped) if shipped is not None else "None",
        force=repr(bool(force_source)),
        hwm=int(hwm),
        route=route,
        protocol=agent.PROTOCOL,
        python=list(sys.version_info[:3]),
    )
