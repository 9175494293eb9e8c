"""Regenerate the planning-widget screenshots shown in the README (needs a display).

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/screenshots/make_screenshots.py [--case NAME] [--out DIR]

Opens a bundled sample case through the plugin, plans it with the case's first preset,
selects the best path, and saves the window with each tab of the dock widget and the 3D
view. Images are reduced to a 256-colour palette so each stays well under 300 KB.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _pump(seconds: float = 0.5) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.time() + seconds
    while time.time() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def _save(image: np.ndarray, path: Path, width: int = 1280) -> None:
    from PIL import Image

    im = Image.fromarray(np.asarray(image)[..., :3])
    if im.width > width:
        im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
    im.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)")


def _close_notifications(viewer) -> None:
    from napari._qt.dialogs.qt_notification import NapariQtNotification

    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", default="celiac_standard")
    parser.add_argument("--out", default=str(HERE))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    import napari

    from napari_plugin._qt.planning import PlanningWidget

    viewer = napari.Viewer(show=True, title="plexus-planner")
    viewer.window.resize(1560, 980)
    viewer.open_sample("plexus-planner", args.case)
    widget = PlanningWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Needle planning", area="right")
    done: list[int] = []
    widget.planned.connect(lambda: done.append(1))
    widget.failed.connect(lambda message: (print("failed:", message), done.append(0)))
    widget.plan()
    start = time.time()
    while not done and time.time() - start < 300:
        _pump(0.2)
    plan = widget.session.plan
    feasible = [i for i, t in enumerate(plan.trajectories) if t.feasible] if plan else []
    widget.table.selectRow(feasible[0] if feasible else 0)
    _pump(1.0)
    _close_notifications(viewer)
    for index, name in ((0, "widget_paths.png"), (1, "widget_needle_view.png")):
        widget.tabs.setCurrentIndex(index)
        _pump(1.0)
        _save(viewer.screenshot(canvas_only=False, flash=False), out / name)
    widget.tabs.setCurrentIndex(2)
    widget.predict_outcome()
    _pump(0.5)
    from qtpy.QtWidgets import QScrollArea

    scroll = widget.findChild(QScrollArea)
    scroll.verticalScrollBar().setValue(scroll.verticalScrollBar().maximum())
    _pump(1.0)
    _save(viewer.screenshot(canvas_only=False, flash=False), out / "widget_outcome.png")
    viewer.dims.ndisplay = 3
    for layer in viewer.layers:
        if layer.name.endswith(" CT"):
            layer.visible = False  # organs at risk, targets and the needle only
        if layer.name.endswith("reference labels"):
            layer.opacity = 0.6
    viewer.reset_view()
    # from behind the prone patient, slightly from the left and from above
    viewer.camera.set_view_direction(view_direction=(-0.35, -1.0, -0.45), up_direction=(1.0, 0.0, 0.0))
    viewer.camera.zoom *= 1.3
    _pump(1.0)
    _save(viewer.screenshot(canvas_only=True, flash=False), out / "needle_3d.png", width=900)
    viewer.close()


if __name__ == "__main__":
    main()
