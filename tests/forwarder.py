"""TCP forwarders, so hosts in their own network namespaces reach servers listening on this
one's loopback only (the throwaway PostgreSQL does):

    python tests/forwarder.py 10.77.1.1:5432=127.0.0.1:5432 10.77.2.1:5432=127.0.0.1:5432
"""

from __future__ import annotations

import asyncio
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def serve(listen: str, target: str) -> asyncio.Server:
    target_host, target_port = target.rsplit(":", 1)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                target_host, int(target_port)
            )
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    host, port = listen.rsplit(":", 1)
    return await asyncio.start_server(handle, host, int(port))


async def main(routes: list[str]) -> None:
    servers = [await serve(*route.split("=", 1)) for route in routes]
    print("ready", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
