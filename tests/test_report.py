from gpo.evaluation.report import html_table


def test_html_table_bolds_the_best_method_not_the_noise_ceiling():
    rows = {"REFERENCE": {"k=5": [0.97], "k=20": [0.975]},
            "group regression": {"k=5": [0.96], "k=20": [0.976]},
            "noise ceiling": {"k=20": [0.985]}}
    table = html_table(rows, ["k=5", "k=20"])
    assert "<td><b>0.9700</b></td>" in table and "<td><b>0.9760</b></td>" in table
    assert "<td>0.9850</td>" in table and "<td>—</td>" in table  # a bound; no k=5 cell
    assert "<th>REFERENCE</th>" in table
