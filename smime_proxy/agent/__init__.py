"""The key agent process (issue 12, privilege separation): its wire format (`protocol`),
the process itself (`server`, run by `smime-proxy agent`) and the fronts' side (`client`:
`AgentClient`, `RemoteKeyAgent`).

May import: nothing.
"""
