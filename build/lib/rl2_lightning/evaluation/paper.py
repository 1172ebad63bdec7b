"""The paper's numbers (Duan et al. 2016, RL²), in one place: Tables 1 and 2 (mean total reward over
1000 tasks per setting and method) and Table 3 (mazes, per episode of a trial).
"""

_T1_COLS = ["random", "gittins", "ts", "ots", "ucb1", "egreedy", "greedy", "rl2"]
_T2_COLS = ["random", "psrl", "opsrl", "ucrl2", "beb", "egreedy", "greedy", "rl2"]
_T1 = {
    (10, 5): [5.0, 6.6, 5.7, 6.5, 6.7, 6.6, 6.6, 6.7],
    (10, 10): [5.0, 6.6, 5.5, 6.2, 6.7, 6.6, 6.6, 6.7],
    (10, 50): [5.1, 6.5, 5.2, 5.5, 6.6, 6.5, 6.5, 6.8],
    (100, 5): [49.9, 78.3, 74.7, 77.9, 78.0, 75.4, 74.8, 78.7],
    (100, 10): [49.9, 82.8, 76.7, 81.4, 82.4, 77.4, 77.1, 83.5],
    (100, 50): [49.8, 85.2, 64.5, 67.7, 84.3, 78.3, 78.0, 84.9],
    (500, 5): [249.8, 405.8, 402.0, 406.7, 405.8, 388.2, 380.6, 401.6],
    (500, 10): [249.0, 437.8, 429.5, 438.9, 437.1, 408.0, 395.0, 432.5],
    (500, 50): [249.6, 463.7, 427.2, 437.6, 457.6, 413.6, 402.8, 438.9],
}
_T2 = {
    10: [100.1, 138.1, 144.1, 146.6, 150.2, 132.8, 134.8, 156.2],
    25: [250.2, 408.8, 425.2, 424.1, 427.8, 377.3, 368.8, 445.7],
    50: [499.7, 904.4, 930.7, 918.9, 917.8, 823.3, 769.3, 936.1],
    75: [749.9, 1417.1, 1449.2, 1427.6, 1422.6, 1293.9, 1172.9, 1428.8],
    100: [999.4, 1939.5, 1973.9, 1942.1, 1935.1, 1778.2, 1578.5, 1913.7],
}
#: The paper's Tables 1 and 2 (Duan et al. 2016): setting -> method -> mean total reward over 1000 tasks.
PAPER_RESULTS: dict[str, dict[str, float]] = {
    **{f"bandit_k{k}_n{n}": dict(zip(_T1_COLS, v)) for (n, k), v in _T1.items()},
    **{f"tabular_n{n}": dict(zip(_T2_COLS, v)) for n, v in _T2.items()},
}

#: Paper Table 3 (Duan et al. 2016), per episode of a trial: (mean length of successful trajectories,
#: its standard error, success rate) for small (5x5) and large (9x9) mazes, and %improved.
PAPER_TABLE3 = {
    5: {"length": [52.4, 39.1, 42.6, 43.5, 43.9], "length_se": [1.3, 0.9, 1.0, 1.1, 1.1],
        "success": [0.993, 0.996, 0.997, 0.994, 0.996], "improved": 0.917},
    9: {"length": [180.1, 151.8, 169.3, 162.3, 169.3], "length_se": [6.0, 5.9, 6.3, 6.4, 6.5],
        "success": [0.971, 0.967, 0.958, 0.956, 0.961], "improved": 0.714},
}
