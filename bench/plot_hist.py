#!/usr/bin/env python3
"""Draws latency-by-percentile plots (SVG, with gnuplot) from byok-loadgen
--hist-out files (HdrHistogram percentile-distribution text).

usage: plot_hist.py OUT.svg|OUT.png TITLE YLABEL LABEL=FILE.hgrm [LABEL=FILE.hgrm ...]

The x axis is 1/(1-percentile) on a log scale (0 %, 90 %, 99 %, 99.9 %, ...),
as HdrHistogram's plotter draws it, so the tail gets as much room as the
median; the y axis is the value in milliseconds, from 0 unless every value
is above half the largest (then autoscaled, so that the spread shows). Rows
are read as written (the 100 % row, which has no 1/(1-p), is dropped); a
missing or empty file is left out of the plot and named on stderr.
"""
import math
import os
import subprocess
import sys

COLOURS = ['#1b9e77', '#d95f02', '#7570b3', '#e7298a', '#66a61e', '#e6ab02']


def read_hgrm(path):
    """(value_ms, one_over_one_minus_p) rows of a percentile-distribution file."""
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) != 4 or line.lstrip().startswith('#'):
                continue
            try:
                value, _, _, inv = map(float, parts)
            except ValueError:
                continue  # the header
            rows.append((value, inv))
    return rows


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    out, title, ylabel = sys.argv[1:4]
    series = []
    for arg in sys.argv[4:]:
        label, _, path = arg.partition('=')
        rows = read_hgrm(path) if os.path.exists(path) else []
        if rows:
            series.append((label, rows))
        else:
            print(f'plot_hist.py: no data in {path}, left out of {out}', file=sys.stderr)
    if not series:
        sys.exit(f'plot_hist.py: nothing to draw for {out}')
    xmax = max(inv for _, rows in series for _, inv in rows)
    xmax = 10 ** max(2, math.ceil(math.log10(max(xmax, 1.0)) - 1e-9))
    ticks = ', '.join(f'"{label}" {10 ** k}' for k, label in
                      enumerate(['0%%', '90%%', '99%%', '99.9%%', '99.99%%', '99.999%%', '99.9999%%'])
                      if 10 ** k <= xmax)

    # From 0, unless every value is above half the largest (the time to the
    # last event of a paced stream): then the spread would be a flat line.
    values = [v for _, rows in series for v, _ in rows]
    narrow = min(values) > 0.5 * max(values)

    def q(s):
        return '"' + s.replace('\\', '\\\\').replace('"', '\\"') + '"'

    script = [
        ('set terminal png size 760,430 noenhanced font "sans,10" background "#ffffff"' if out.endswith('.png') else
         'set terminal svg size 760,430 dynamic noenhanced font "sans,12" background "white"'),
        f'set output {q(out)}',
        f'set title {q(title)}',
        'set logscale x',
        f'set xrange [1:{xmax}]',
        f'set xtics ({ticks})',
        'set xlabel "percentile (log scale of 1/(1-p))"',
        f'set ylabel {q(ylabel)}',
        f'set yrange [{"*" if narrow else "0"}:*]',
        'set grid xtics ytics lc rgb "#dddddd"',
        'set key top left box opaque',
        'set border 3',
        'set tics nomirror',
    ]
    for i, (_, rows) in enumerate(series):
        script.append(f'$d{i} << EOD')
        script += [f'{inv:.6g} {value:.6g}' for value, inv in rows]
        script.append('EOD')
    plots = [f'$d{i} using 1:2 with lines lw 2 lc rgb "{COLOURS[i % len(COLOURS)]}" title {q(label)}'
             for i, (label, _) in enumerate(series)]
    script.append('plot ' + ', \\\n     '.join(plots))
    subprocess.run(['gnuplot'], input='\n'.join(script) + '\n', text=True, check=True)


if __name__ == '__main__':
    main()
