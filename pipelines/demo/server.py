"""The demo's web server: the page, its WebSocket stream, and the sensor switches (aiohttp, own thread).

Routes:
    GET  /                       the page (static HTML, JS and CSS from `static/`; no build step)
    GET  /ws                     the live stream: JSON messages, newest state only
    GET  /api/state              the current stats as JSON (sensors, throughput, status)
    POST /api/sensors/{sensor}   body {"enabled": true|false}: switch a sensor on or off

The stream never queues. One render task turns the newest `DemoState` snapshot into a message
when its version moved (and only while someone watches); each connection sends the newest
rendered message once its previous send has finished, so a slow browser skips states rather
than falling behind. When nothing new came for a second it gets a small `stats` message, which
keeps the age of the prediction and the sensor states current.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from pipelines.demo.state import DemoState, Snapshot

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
RENDER_PERIOD_S = 0.05  # how often the render task looks for a new state (20 checks/s)
STATS_PERIOD_S = 1.0  # longest a connection goes without a message


class DemoServer:
    """Serves the page on an already bound socket until `stop()`; `toggle(sensor_id, enabled)` switches sensors."""

    def __init__(self, *, state: DemoState, sock: socket.socket, toggle: Callable[[str, bool], None]) -> None:
        self.state = state
        self.sock = sock
        self.toggle = toggle
        self.watchers = 0
        self._rendered: tuple[int, str] = (-1, "")  # (state version, JSON message)
        self._changed = asyncio.Condition()  # notified when `_rendered` moves on
        self._sockets: set[web.WebSocketResponse] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name="demo-server", daemon=True)
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    # ---- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Serve from a background thread; returns once the server accepts connections."""
        self._thread.start()
        self._ready.wait(timeout=30)
        if self._startup_error is not None:
            raise self._startup_error

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        runner = web.AppRunner(self._app(), handle_signals=False)
        try:
            self._loop.run_until_complete(runner.setup())
            self._loop.run_until_complete(web.SockSite(runner, self.sock, shutdown_timeout=1.0).start())
        except BaseException as err:  # handed to start(), which raises it in the caller's thread
            self._startup_error = err
            self._ready.set()
            return
        render = self._loop.create_task(self._render_loop())
        self._ready.set()
        self._loop.run_forever()
        render.cancel()
        self._loop.run_until_complete(self._close_sockets())
        self._loop.run_until_complete(runner.cleanup())
        self._loop.close()

    async def _close_sockets(self) -> None:
        """Tell every browser the server is going away (it then shows it and retries)."""
        closing = [ws.close(code=WSCloseCode.GOING_AWAY, message=b"demo stopped") for ws in self._sockets]
        await asyncio.gather(*closing, return_exceptions=True)

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/ws", self._ws)
        app.router.add_get("/api/state", self._api_state)
        app.router.add_post("/api/sensors/{sensor}", self._api_sensor)
        app.router.add_static("/static/", STATIC)
        return app

    # ---- rendering ----------------------------------------------------------------------------
    async def _render_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(RENDER_PERIOD_S)
            if not self.watchers or self.state.version == self._rendered[0]:
                continue
            snap = self.state.snapshot()
            try:
                # JPEG/PNG encoding takes milliseconds: off the event loop, which keeps serving.
                message = await loop.run_in_executor(None, self._render, snap)
            except Exception:  # a frame that cannot be drawn must not end the stream
                log.exception("demo: rendering state %d failed; showing the next one", snap.version)
                continue
            self._rendered = (snap.version, message)
            async with self._changed:
                self._changed.notify_all()

    def _render(self, snap: Snapshot) -> str:
        return json.dumps(self.state.payload(snap))

    async def _next_message(self, sent: int) -> tuple[int, str]:
        """The newest rendered message if newer than `sent`; else, after a second, a stats message."""
        if self._rendered[0] <= sent:
            async with self._changed:
                try:
                    await asyncio.wait_for(
                        self._changed.wait_for(lambda: self._rendered[0] > sent), STATS_PERIOD_S
                    )
                except TimeoutError:
                    return sent, json.dumps(self.state.stats(self.state.snapshot()))
        return self._rendered

    # ---- handlers -----------------------------------------------------------------------------
    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=10.0, timeout=1.0)
        await ws.prepare(request)
        self._sockets.add(ws)
        # The page sends nothing; reading still has to happen for close frames to be noticed.
        reader = asyncio.ensure_future(self._drain(ws))
        self.watchers += 1
        sent = -1
        try:
            while not ws.closed and not reader.done():
                sent, message = await self._next_message(sent)
                await ws.send_str(message)
        except (ConnectionError, RuntimeError) as err:  # the browser went away mid-send
            log.debug("demo: websocket closed: %s", err)
        finally:
            self.watchers -= 1
            self._sockets.discard(ws)
            reader.cancel()
        return ws

    @staticmethod
    async def _drain(ws: web.WebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is WSMsgType.ERROR:
                return

    async def _api_state(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.state.stats(self.state.snapshot()))

    async def _api_sensor(self, request: web.Request) -> web.StreamResponse:
        sensor = request.match_info["sensor"]
        try:
            body: Any = await request.json()
        except ValueError:
            return _error(400, 'expected a JSON body {"enabled": true|false}')
        if not isinstance(body, dict) or not isinstance(body.get("enabled"), bool):
            return _error(400, f'expected {{"enabled": true|false}}, got {body!r}')
        try:
            self.state.set_enabled(sensor, body["enabled"])
        except KeyError as err:
            return _error(404, str(err.args[0]))
        self.toggle(sensor, body["enabled"])
        return web.json_response(self.state.stats(self.state.snapshot()))


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
