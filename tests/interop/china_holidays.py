"""China's public holidays for 2027-2035 as the `holidays` package computes them.

Those years have no published arrangement in the package, which computes them from the
national measures as kaifang's provisional calendar does (policy/src/statutory.rs): the
statutory days, lunar dates and the Qingming solar term from its own tables, and a day given
back on the next free weekday for each holiday on a weekend. The table this prints is what
policy/tests/statutory.rs checks kaifang's computation against.

    python3 tests/interop/china_holidays.py > policy/tests/data/holidays-china-2027-2035.txt
    python3 tests/interop/china_holidays.py --check policy/tests/data/holidays-china-2027-2035.txt

With --check, exits 1 and shows the difference when the committed table is not what the
installed package (pinned in tests/interop/requirements.txt) computes.
"""

import difflib
import sys

import holidays

YEARS = range(2027, 2036)

# The package's Chinese names (its default language) to the table's festival keys.
FESTIVALS = {
    "元旦": "new_years_day",
    "农历除夕": "lunar_new_years_eve",
    "春节": "spring_festival",
    "清明节": "qingming",
    "劳动节": "labour_day",
    "端午节": "dragon_boat",
    "中秋节": "mid_autumn",
    "国庆节": "national_day",
}
GIVEN_BACK = "（补假）"


def table() -> str:
    lines = [
        f"# China's public holidays {YEARS[0]}-{YEARS[-1]} as the PyPI package holidays=={holidays.__version__}",
        "# computes them (holidays.China(years=Y, language='zh_CN')): date, statutory or given_back, festival.",
        "# Written by tests/interop/china_holidays.py; .ci/run checks it against the pinned package.",
    ]
    for year in YEARS:
        calendar = holidays.China(years=year, language="zh_CN")
        rows = []
        for date, names in sorted(calendar.items()):
            for name in names.split("; "):
                kind = "statutory"
                if name.endswith(GIVEN_BACK):
                    kind, name = "given_back", name[: -len(GIVEN_BACK)]
                rows.append(f"{date.isoformat()}\t{kind}\t{FESTIVALS[name]}")
        lines.extend(sorted(rows))
    return "\n".join(lines) + "\n"


def main() -> int:
    computed = table()
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        with open(sys.argv[2], encoding="utf-8") as f:
            committed = f.read()
        if committed != computed:
            sys.stdout.writelines(
                difflib.unified_diff(committed.splitlines(True), computed.splitlines(True), sys.argv[2], "holidays")
            )
            print(f"{sys.argv[2]}: not what holidays {holidays.__version__} computes", file=sys.stderr)
            return 1
        print(f"{sys.argv[2]}: as holidays {holidays.__version__} computes it")
        return 0
    if len(sys.argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    sys.stdout.write(computed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
