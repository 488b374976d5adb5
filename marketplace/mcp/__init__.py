"""The Model Context Protocol server at `/mcp` (SPEC §19): the exchange as tools an LLM agent
can call, through the official `mcp` SDK.

- `endpoint`: the Django view. It authenticates the API key as the REST API does, then hands
  the request to the SDK's Streamable HTTP transport (stateless, JSON responses).
- `server`: the SDK's low-level `Server`, which lists the tools and dispatches calls.
- `catalog`: each tool's name, description and input and output JSON Schemas.
- `calls`: what each tool does, through the same services and selectors as the REST API.
- `results`: the structured results and the tool errors (the REST error codes).
- `waiting`: how `run_agent` waits for a task to be final.
"""
