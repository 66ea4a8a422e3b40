"""An identifier's fill grows along its printed line: a glyph at the line's end that no box held (the leading
"0" of a turned date over bone was left readable) and the rest of a name read in another box ("NGUYEN" filled,
"VAN AN" left). Boxes worked by hand; words on other lines, of other heights or too far away stay untouched."""

from __future__ import annotations

from medsight.deid.reading import FoundWord, along_line


def _word(box, vertical=False, text="VAN"):
    return FoundWord(text, 80.0, box, (box, "light-on-dark", vertical, 0), vertical, "annotation", "word", box)


def test_level_line_grows_by_reach_and_takes_the_rest_of_the_name():
    line = (100, 50, 200, 70)  # 20 px high: reach 0.6 -> 12 px each way
    near = _word((208, 52, 240, 68))  # 8 px after the line: taken
    after_near = _word((250, 50, 280, 70))  # 10 px after ``near``: taken in the next step
    other_line = _word((205, 80, 240, 100))  # the line below: not taken
    tall = _word((205, 40, 240, 95))  # 55 px high (> 2x): a different kind of box, not taken
    far = _word((400, 50, 440, 70))  # far along: not taken
    box, taken = along_line(line, False, [near, after_near, other_line, tall, far], h=500, w=1000, reach=0.6)
    assert [t.box for t in taken] == [near.box, after_near.box]
    assert box == (100 - 12, 50, 280 + 12, 70)


def test_vertical_line_grows_along_y_and_is_clipped_to_the_frame():
    line = (30, 5, 60, 200)  # turned text, 30 px across: reach 1.0 -> 30 px up (clipped at 0) and down
    box, taken = along_line(line, True, [], h=220, w=100, reach=1.0)
    assert taken == []
    assert box == (30, 0, 60, 220)


def test_growth_stops_at_twice_the_line_length_and_one_gap():
    line = (0, 0, 40, 20)  # 40 px long, 20 px high: the grown line may span 2 x 40 + 1.5 x 20 = 110 px
    chain = [_word((44 + 30 * k, 0, 70 + 30 * k, 20)) for k in range(5)]  # each 4 px after the last
    box, taken = along_line(line, False, chain, h=100, w=1000, reach=0.5)
    assert [t.box for t in taken] == [chain[0].box, chain[1].box]  # 0..100; the next (104..130) makes 130 > 110
    assert box == (0, 0, 100 + 10, 20)
    box, taken = along_line(line, False, chain, h=100, w=1000, reach=0.5, join=0.25)  # 5-px gaps: 85 px
    assert [t.box for t in taken] == [chain[0].box]
