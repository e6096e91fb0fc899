#!/usr/bin/env python3
"""Instructions per request from a callgrind dump, by library and by function.

    callgrind_summary.py CALLGRIND_OUT REQUESTS [TOP]

Reads the dump itself (the callgrind format: a function's own cost is
every cost line under its `fn=` that does not follow a `calls=` line;
that one is the inclusive cost of a call). callgrind_annotate was not
used: on a dump taken while the worker thread is inside io_context::run it
lists the frames that enclose everything with the whole program's cost.
"""
import collections
import re
import sys


def own_costs(path: str):
    """{(object, function): Ir}, and the dump's total."""
    names = {'ob': {}, 'fn': {}}
    ob = fn = '?'
    positions = 1
    summary = totals = None
    skip_next = False
    costs = collections.Counter()
    with open(path, errors='replace') as f:
        for line in f:
            line = line.rstrip('\n')
            if not line or line.startswith('#'):
                continue
            head = line[0]
            if head.isdigit() or head in '+-*':
                if skip_next:
                    skip_next = False
                    continue
                fields = line.split()
                if len(fields) > positions:
                    costs[(ob, fn)] += int(fields[positions])
                continue
            key, _, value = line.partition('=')
            if key in ('ob', 'fn', 'cob', 'cfn'):
                m = re.match(r'\((\d+)\)(?: (.*))?$', value)
                kind = key[-2:]
                if m:
                    if m.group(2) is not None:
                        names[kind][m.group(1)] = m.group(2)
                    value = names[kind].get(m.group(1), '?')
                if key == 'ob':
                    ob = value
                elif key == 'fn':
                    fn = value
            elif key == 'calls':
                skip_next = True
            elif line.startswith('positions:'):
                positions = len(line.split(':', 1)[1].split())
            elif line.startswith('summary:'):
                summary = int(line.split(':', 1)[1].split()[0])
            elif line.startswith('totals:'):
                totals = int(line.split(':', 1)[1].split()[0])
    return costs, summary, totals


def main() -> None:
    path, requests = sys.argv[1], float(sys.argv[2])
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 25
    costs, total, totals = own_costs(path)
    if not total or requests <= 0:
        sys.exit('callgrind_summary.py: no summary in the dump, or no requests')
    # `summary:` counts what ran since the counters were zeroed; `totals:`
    # (and the functions' own costs) can hold more: cost callgrind kept
    # through the zeroing. Then the breakdown below is not the window's.
    if totals is not None and abs(totals - total) > total * 0.002:
        print(f'warning: the functions\' costs add up to {totals / total:.1%} of the window\'s total; '
              'the breakdown holds cost from before the counters were zeroed', file=sys.stderr)
    by_lib = collections.Counter()
    for (ob, _), ir in costs.items():
        by_lib[ob.rsplit('/', 1)[-1]] += ir
    counted = sum(costs.values())
    print(f'{total / requests:,.0f} instructions a request ({requests:.0f} requests; '
          f'the functions\' own costs add up to {counted / total:.1%} of that)')
    print('\nby library:')
    for name, ir in by_lib.most_common():
        if ir / requests >= 50:
            print(f'  {ir / requests:>10,.0f}  {name}')
    print(f'\nthe {top} dearest functions (own cost):')
    for (ob, fn), ir in costs.most_common(top):
        print(f'  {ir / requests:>10,.0f}  {fn[:110]}  [{ob.rsplit("/", 1)[-1]}]')


if __name__ == '__main__':
    main()
