"""The Loss pane's plot as a reader checks it: labels that name the values where they stand, a
curve through the cells its points fall in, rung boundaries and held-out markers."""

from __future__ import annotations

from evotui.tui.plot import MARKER, Series, draw

WIDTH, HEIGHT = 40, 14


def lines(*series: Series, vlines=()) -> list[str]:
    return [t.plain for t in draw(list(series), WIDTH, HEIGHT, vlines, "red", "step")]


def test_labels_name_the_ends_of_the_data_and_a_falling_curve_runs_corner_to_corner():
    out = lines(Series([(0.0, 5.0), (100.0, 1.0)], "green"))
    assert len(out) == HEIGHT
    frame_top, *canvas, frame_bottom, ticks, label = out
    assert len(canvas) == HEIGHT - 4
    assert canvas[0].startswith("5.00┤") and canvas[-1].startswith("1.00┤")
    labelled = [float(row.split("┤")[0]) for row in canvas if "┤" in row]
    assert labelled == sorted(labelled, reverse=True)  # top to bottom, high to low
    left = len("5.00┤")
    assert canvas[0][left] != " " and canvas[0][-2] == " "  # starts top left...
    assert canvas[-1][-2] != " " and canvas[-1][left] == " "  # ...ends bottom right
    assert float(ticks.split()[0]) == 0.0 and float(ticks.split()[-1]) == 100.0
    assert label.strip() == "step"
    assert frame_top.strip().startswith("┌") and frame_bottom.strip().startswith("└")


def test_a_rung_boundary_is_a_line_where_no_curve_passes_and_held_out_rows_are_markers():
    out = lines(Series([(0.0, 1.0), (10.0, 1.0)], "green"),
                Series([(5.0, 2.0)], "cyan", dots=True), vlines=[5.0])
    frame_top, *canvas, frame_bottom, _ticks, _label = out[:]
    col = frame_top.index("┬")
    assert frame_bottom[col] in "┴┼"
    assert canvas[0][col] == MARKER  # the held-out loss, at the top (the higher value)
    assert all(row[col] in "│" for row in canvas[1:-1])
    assert canvas[-1][col] != "│"  # the curve passes there: its dots, not the boundary


def test_one_point_sits_mid_plot_and_nothing_gives_an_empty_frame():
    out = lines(Series([(3.0, 2.0)], "green"))
    canvas = out[1:-3]
    drawn = [i for i, row in enumerate(canvas) if any(0x2800 < ord(c) <= 0x28FF for c in row)]
    assert drawn and 0 < drawn[0] < len(canvas) - 1
    empty = lines()
    assert empty[0].strip().startswith("┌") and len(empty) == HEIGHT
    assert not any(ch.isdigit() for line in empty for ch in line)  # no values for no data


def test_a_diverged_point_is_left_out_not_a_crash():
    inf, nan = float("inf"), float("nan")
    out = lines(Series([(0.0, 5.0), (50.0, inf), (75.0, nan), (100.0, 1.0)], "green"))
    assert out == lines(Series([(0.0, 5.0), (100.0, 1.0)], "green"))
    assert len(lines(Series([(1.0, inf)], "green"))) == HEIGHT  # nothing finite: empty frame
