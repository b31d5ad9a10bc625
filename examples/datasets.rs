//! Writes the real tabular datasets bundled with linfa-datasets as CSV
//! files with a header line, ready for `edgeinfer-host train`:
//! `iris.csv` (150 flowers, 4 features, `species`) and `winequality.csv`
//! (1599 red wines, 11 features, `quality`).
//!
//!     cargo run --example datasets -- DIR

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| ".".into()));
    std::fs::create_dir_all(&dir)?;
    let iris = linfa_datasets::iris();
    let species = ["setosa", "versicolor", "virginica"];
    let mut text = iris.feature_names().join(",") + ",species\n";
    for (row, t) in iris.records().rows().into_iter().zip(iris.targets().iter()) {
        let cells: Vec<String> = row.iter().map(|v| v.to_string()).collect();
        text += &format!("{},{}\n", cells.join(","), species[*t]);
    }
    std::fs::write(dir.join("iris.csv"), text)?;
    let wine = linfa_datasets::winequality();
    let names: Vec<String> = wine
        .feature_names()
        .iter()
        .map(|n| n.replace(' ', "_"))
        .collect();
    let mut text = names.join(",") + ",quality\n";
    for (row, t) in wine.records().rows().into_iter().zip(wine.targets().iter()) {
        let cells: Vec<String> = row.iter().map(|v| v.to_string()).collect();
        text += &format!("{},{}\n", cells.join(","), t);
    }
    std::fs::write(dir.join("winequality.csv"), text)?;
    println!(
        "wrote {}/iris.csv and {}/winequality.csv",
        dir.display(),
        dir.display()
    );
    Ok(())
}
