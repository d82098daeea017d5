"""The dashboard frame of ``SageServeEnv.render()``: an RGB array drawn with numpy.

One panel per endpoint (rows: regions, columns: models) plots the billed instances by state
(active, starting, draining, stacked) against the arriving IW load over the recent past, with the
interval's IW SLO misses as red ticks along the bottom; the last column plots each region's
servers (billed, spot, free). A header line gives the time of day, the cost so far, the billed
GPU-hours and the IW SLO attainment. ``"human"`` shows the same frames in a pygame window.

Frames are drawn with array operations (stacked areas by comparing pixel rows against the
layers' heights) and text from a glyph atlas rendered once, because a paper-scale day is 1,440
frames and a frame must cost well under the ~14 ms a detailed step takes
(``bench/bench_render.py``).
"""

from __future__ import annotations

import string
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

PANEL_W, PANEL_H, HEADER_H = 192, 112, 48  # px; frame sides stay multiples of 16 for the video codec
PLOT_TOP, PLOT_BOTTOM, PLOT_LEFT, PLOT_RIGHT = 30, 5, 5, 5  # margins of a panel's plot area, px
LINE_1, LINE_2 = 3, 16  # text lines of a panel and of the header, px from the top
LOAD_MINUTES = 5  # the load line is the mean over this many minutes
HISTORY_CAPACITY = 8192  # samples kept; older ones fall outside any reasonable window anyway

BACKGROUND = (250, 250, 250)
PLOT_BG = (236, 238, 242)
TEXT = (30, 30, 30)
ACTIVE, STARTING, DRAINING = (76, 153, 92), (240, 170, 60), (150, 110, 190)
SPOT, FREE = (110, 160, 215), (200, 205, 212)
LOAD, MISS = (20, 20, 20), (215, 40, 40)


class GlyphAtlas:
    """Printable ASCII glyphs of Pillow's default font, pre-blended in the text colour over the
    background colour, so that drawing a string is a concatenation and a copy (Pillow's own text
    drawing costs ~0.6 ms a string; a frame has ~30)."""

    def __init__(self, size: int = 10, color: Sequence[int] = TEXT, background: Sequence[int] = BACKGROUND):
        from PIL import Image, ImageDraw, ImageFont

        try:
            font = ImageFont.load_default(size=size)
        except TypeError:  # Pillow without FreeType: the fixed bitmap font
            font = ImageFont.load_default()
        ascent, descent = font.getmetrics() if hasattr(font, "getmetrics") else (size, 3)
        self.height = ascent + descent
        fg, bg = np.asarray(color, dtype=np.float32), np.asarray(background, dtype=np.float32)
        self.glyphs: Dict[str, np.ndarray] = {}
        for ch in string.printable[:95]:
            width = max(int(np.ceil(font.getlength(ch))), 4 if ch == " " else 1)
            img = Image.new("L", (width, self.height), 0)
            ImageDraw.Draw(img).text((0, 0), ch, fill=255, font=font)
            a = np.asarray(img, dtype=np.float32)[:, :, None] / 255.0
            self.glyphs[ch] = np.rint(bg * (1.0 - a) + fg * a).astype(np.uint8)
        self._unknown = self.glyphs["?"]
        self._strips: Dict[str, np.ndarray] = {}  # recent strings, drawn once

    def strip(self, text: str) -> np.ndarray:
        """``text`` as an (height, width, 3) image."""
        img = self._strips.get(text)
        if img is None:
            if len(self._strips) > 4096:
                self._strips.clear()
            img = np.concatenate([self.glyphs.get(c, self._unknown) for c in text], axis=1)
            self._strips[text] = img
        return img

    def width(self, text: str) -> int:
        return self.strip(text).shape[1] if text else 0

    def draw(self, frame: np.ndarray, x: int, y: int, text: str) -> None:
        """Copy ``text`` into ``frame`` (H, W, 3 uint8) with its top-left corner at (x, y), clipped."""
        if not text:
            return
        img = self.strip(text)
        h = min(img.shape[0], frame.shape[0] - y)
        w = min(img.shape[1], frame.shape[1] - x)
        if w > 0 and h > 0:
            frame[y:y + h, x:x + w] = img[:h, :w]


def _palette(*colors: Tuple[int, int, int]) -> np.ndarray:
    """Colours as a (colours, 3) uint8 table for ``_colour``."""
    return np.array(colors, dtype=np.uint8)


def _layers(heights: np.ndarray, plot_h: int) -> np.ndarray:
    """Stacked areas as layer indices: ``heights`` (panels, layers, columns) of cumulative pixel
    heights give (panels, plot_h, columns) uint8: 0 inside the bottom layer, k inside layer k,
    ``layers`` above the top one."""
    rows = np.arange(plot_h - 1, -1, -1, dtype=np.int16)[None, :, None]  # pixel row -> height
    h = heights.astype(np.int16)
    layer = np.greater_equal(rows, h[:, 0, None, :]).view(np.uint8)
    for k in range(1, h.shape[1]):
        layer = layer + np.greater_equal(rows, h[:, k, None, :]).view(np.uint8)
    return layer


def _colour(layer: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Layer indices (...) to contiguous RGB (..., 3) through a ``_palette`` (one gather; the
    panels are then plain copies into the frame)."""
    return palette.take(layer, axis=0)


def _nice_ceiling(x: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k at least ``x`` (an axis maximum)."""
    if x <= 0:
        return 1.0
    exp = 10.0 ** np.floor(np.log10(x))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * exp >= x * (1 - 1e-12):
            return float(m * exp)
    return float(10 * exp)


def _si(x: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.1f}{suffix}"
    return f"{x:.0f}"


class DashboardRenderer:
    """Keeps the recent past of one env's episode and draws it as a dashboard frame.

    ``render(view, kpis, slo_misses)`` samples the state now (the env's ``SimView``, its
    ``kpis()`` and the running IW SLO misses per endpoint) and returns the frame; the history is
    what earlier calls sampled (every step when recording a video), so a frame shows the last
    ``history_s`` seconds as far as they were rendered. A new episode (a new view) clears it.
    """

    def __init__(self, region_names: Sequence[str], model_names: Sequence[str], mode: str = "rgb_array",
                 history_s: float = 7200.0, fps: int = 30):
        if mode not in ("rgb_array", "human"):
            raise ValueError(f"render mode must be 'rgb_array' or 'human', got {mode!r}")
        self.mode = mode
        self.regions, self.models = list(region_names), list(model_names)
        self.history_s = float(history_s)
        self.fps = fps
        R, M = len(self.regions), len(self.models)
        self.shape = (HEADER_H + R * PANEL_H, (M + 1) * PANEL_W, 3)
        self.plot_w = PANEL_W - PLOT_LEFT - PLOT_RIGHT
        self.plot_h = PANEL_H - PLOT_TOP - PLOT_BOTTOM
        self.atlas = GlyphAtlas()
        self._endpoint_palette = _palette(ACTIVE, STARTING, DRAINING, PLOT_BG, LOAD, MISS)
        self._region_palette = _palette(ACTIVE, SPOT, FREE, PLOT_BG)
        self._background = self._draw_background()
        self._window = None
        self._episode_view = None
        self._clear()

    # -- history --------------------------------------------------------------------------
    def _clear(self) -> None:
        R, M, C = len(self.regions), len(self.models), HISTORY_CAPACITY
        self._n = 0
        self._t = np.zeros(C)
        self._billed = np.zeros((C, R * M, 3))  # active, starting, draining
        self._fleet = np.zeros((C, R, 3))  # billed, spot, free servers
        self._misses = np.zeros((C, R * M))  # running IW SLO misses

    def _sample(self, view, slo_misses: np.ndarray) -> None:
        if view is not self._episode_view or (self._n and view.now < self._t[self._n - 1]):
            self._clear()
            self._episode_view = view
        if self._n == HISTORY_CAPACITY:  # drop the older half
            keep = HISTORY_CAPACITY // 2
            for a in (self._t, self._billed, self._fleet, self._misses):
                a[:keep] = a[-keep:]
            self._n = keep
        if self._n and view.now == self._t[self._n - 1]:
            i = self._n - 1  # rendered twice at one instant: the newer state wins
        else:
            i = self._n
            self._n += 1
        ep = view.endpoints()
        billed = np.stack([ep.active, ep.starting, ep.draining], axis=-1).reshape(-1, 3)
        spot = view.spot_servers().sum(axis=1)
        free = view.free_servers()
        self._t[i] = view.now
        self._billed[i] = billed
        self._fleet[i] = np.stack([view.servers() - spot - free, spot, free], axis=-1)
        self._misses[i] = np.asarray(slo_misses, dtype=float).reshape(-1)

    # -- drawing --------------------------------------------------------------------------
    def _panel_origin(self, r: int, col: int) -> Tuple[int, int]:
        return HEADER_H + r * PANEL_H, col * PANEL_W

    def _draw_background(self) -> np.ndarray:
        frame = np.empty(self.shape, dtype=np.uint8)
        frame[:] = BACKGROUND
        frame[HEADER_H - 1, :] = (180, 180, 180)
        R, M = len(self.regions), len(self.models)
        for r in range(R):
            for col in range(M + 1):
                y, x = self._panel_origin(r, col)
                frame[y + PANEL_H - 1, x:x + PANEL_W] = (215, 215, 215)
                frame[y:y + PANEL_H, x + PANEL_W - 1] = (215, 215, 215)
                title = f"{self.regions[r]} / {self.models[col]}" if col < M else f"{self.regions[r]} servers"
                self.atlas.draw(frame, x + PLOT_LEFT, y + LINE_1, title)
        legend = [("active", ACTIVE), ("starting", STARTING), ("draining", DRAINING), ("IW load", LOAD),
                  ("SLO miss", MISS), ("spot", SPOT), ("free", FREE)]
        x, y = 8, HEADER_H // 2 + LINE_2 // 2
        for name, color in legend:
            frame[y + 3:y + 11, x:x + 10] = color
            self.atlas.draw(frame, x + 13, y, name)
            x += self.atlas.width(name) + 22
        return frame

    def _columns(self, now: float) -> Tuple[np.ndarray, np.ndarray]:
        """For each plot column, the index of the last sample at or before its time (-1: none)
        and the column's time."""
        col_t = now - self.history_s + (np.arange(self.plot_w) + 1) * (self.history_s / self.plot_w)
        idx = np.searchsorted(self._t[:self._n], col_t, side="right") - 1
        idx[col_t < 0] = -1
        return idx, col_t

    def draw(self, view, kpis: Dict[str, float]) -> np.ndarray:
        """The frame of the sampled history, as (H, W, 3) uint8."""
        R, M = len(self.regions), len(self.models)
        E = R * M
        frame = self._background.copy()
        idx, col_t = self._columns(view.now)
        have = idx >= 0
        safe = np.where(have, idx, 0)
        ph, pw = self.plot_h, self.plot_w
        # endpoints: billed instances by state, stacked, on a per-panel scale
        billed = self._billed[safe].transpose(1, 2, 0)  # (E, 3, columns)
        billed[:, :, ~have] = 0.0
        cum = np.cumsum(billed, axis=1)
        scale = np.array([_nice_ceiling(v * 1.1) for v in np.maximum(cum[:, -1, :].max(axis=1), 1.0)])
        heights = np.rint(cum / scale[:, None, None] * ph).astype(np.int64)
        layer = _layers(heights, ph)  # 0 active, 1 starting, 2 draining, 3 none; 4 load, 5 miss below
        # arriving IW load (prompt tokens per minute by home region, 5-minute mean) as a line
        demand = view.demand_history().reshape(-1, E)
        total = np.concatenate([np.zeros((1, E)), np.cumsum(demand, axis=0)])
        minute = np.floor(col_t / 60.0).astype(np.int64)  # minutes complete by the column's time
        has_load = (minute >= 1) & (minute <= len(demand))
        m = np.clip(minute, 0, len(demand))
        span = np.maximum(m - np.maximum(m - LOAD_MINUTES, 0), 1)
        load = ((total[m] - total[np.maximum(m - LOAD_MINUTES, 0)]) / span[:, None]).T  # (E, columns)
        load[:, ~has_load] = 0.0
        load_top = np.array([_nice_ceiling(v * 1.1) for v in load.max(axis=1)])
        y = np.minimum(np.rint(load / load_top[:, None] * (ph - 1)).astype(np.int16), ph - 1)
        prev = np.concatenate([y[:, :1], y[:, :-1]], axis=1)
        rows = np.arange(ph - 1, -1, -1, dtype=np.int16)[None, :, None]
        line = ((rows >= np.minimum(prev, y)[:, None, :]) & (rows <= (np.maximum(prev, y) + 1)[:, None, :])
                & has_load[None, None, :])
        np.copyto(layer, 4, where=line)
        # IW SLO misses since the previous column: red ticks at the bottom
        misses = self._misses[safe].T  # (E, columns)
        new = np.diff(misses, axis=1, prepend=misses[:, :1]) > 0
        new &= have[None, :]
        tick_h = max(ph // 8, 3)
        np.copyto(layer[:, ph - tick_h:, :], 5, where=new[:, None, :])
        panels = _colour(layer, self._endpoint_palette)
        # regions: billed, spot and free servers, stacked on the fleet's scale
        fleet = self._fleet[safe].transpose(1, 2, 0)
        fleet[:, :, ~have] = 0.0
        servers = np.maximum(view.servers().astype(float), 1.0)
        fheights = np.rint(np.cumsum(fleet, axis=1) / servers[:, None, None] * ph).astype(np.int64)
        region_panels = _colour(_layers(fheights, ph), self._region_palette)
        # the figures now
        last = self._n - 1
        first = int(np.searchsorted(self._t[:self._n], view.now - self.history_s, side="left"))
        recent_misses = self._misses[last] - self._misses[min(first, last)]
        atlas = self.atlas
        for e in range(E):
            y0, x0 = self._panel_origin(*divmod(e, M))
            y0, x0 = y0 + PLOT_TOP, x0 + PLOT_LEFT
            frame[y0:y0 + ph, x0:x0 + pw] = panels[e]
            a, s, d = self._billed[last, e]
            y1 = y0 - PLOT_TOP
            title = f"{self.regions[e // M]} / {self.models[e % M]}"
            atlas.draw(frame, x0 + atlas.width(title), y1 + LINE_1, f":  {a:.0f} act  {s:.0f} st  {d:.0f} dr")
            atlas.draw(frame, x0, y1 + LINE_2, f"IW {_si(load[e, -1] / 60)} tok/s  miss {recent_misses[e]:.0f}")
            label = f"max {scale[e]:g}"
            atlas.draw(frame, x0 + pw - atlas.width(label), y1 + LINE_2, label)
        for r in range(R):
            y0, x0 = self._panel_origin(r, M)
            y0, x0 = y0 + PLOT_TOP, x0 + PLOT_LEFT
            frame[y0:y0 + ph, x0:x0 + pw] = region_panels[r]
            b, s, f = self._fleet[last, r]
            atlas.draw(frame, x0, y0 - PLOT_TOP + LINE_2, f"billed {b:.0f}  spot {s:.0f}  free {f:.0f}  of {servers[r]:.0f}")
        day, rem = divmod(int(view.now), 86400)
        header = (f"day {day} {rem // 3600:02d}:{rem % 3600 // 60:02d}   cost ${kpis['cost_usd']:,.0f}   "
                  f"billed {kpis['billed_gpu_hours']:,.0f} GPU-h   "
                  f"IW SLO {100 * kpis['iw_slo_attainment_served']:.2f}%   reward {kpis['reward']:,.1f}")
        atlas.draw(frame, 8, LINE_2 // 2, header)
        return frame

    def render(self, view, kpis: Dict[str, float], slo_misses: np.ndarray) -> Optional[np.ndarray]:
        """Sample the state now and return the frame (``"rgb_array"``) or show it (``"human"``)."""
        self._sample(view, slo_misses)
        frame = self.draw(view, kpis)
        if self.mode == "rgb_array":
            return frame
        self._show(frame)
        return None

    # -- window ---------------------------------------------------------------------------
    def _show(self, frame: np.ndarray) -> None:
        import pygame

        if self._window is None:
            pygame.display.init()  # the display only: no audio or joystick needed
            pygame.display.set_caption("sageserve_env")
            self._window = pygame.display.set_mode((frame.shape[1], frame.shape[0]))
        surface = pygame.surfarray.make_surface(frame.swapaxes(0, 1))
        self._window.blit(surface, (0, 0))
        pygame.event.pump()
        pygame.display.flip()

    def close(self) -> None:
        if self._window is not None:
            import pygame

            pygame.display.quit()
            self._window = None

