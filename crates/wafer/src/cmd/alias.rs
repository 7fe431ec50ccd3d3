//! `wafer alias set NAME ALIAS --version V [--weight W=10%]`, `wafer alias ls NAME` and
//! `wafer alias rm NAME ALIAS`.

use crate::cli::{AliasArgs, AliasCommand};
use crate::client::Client;
use crate::output;
use std::process::ExitCode;
use wafer_api::{Alias, AliasInfo, AliasList};

pub async fn run(args: AliasArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.client);
    match args.command {
        AliasCommand::Set {
            name,
            alias,
            version,
            weight,
        } => {
            let target = Alias {
                version,
                weights: weight.into_iter().collect(),
            };
            let path = format!("/v1/functions/{name}/aliases/{alias}");
            let set: AliasInfo = client.put_json(&path, &target).await?;
            let text = format!("{name}:{} → {}", set.name, describe(&set));
            output::message(args.client.output, &set, &text)?;
        }
        AliasCommand::Ls { name } => {
            let path = format!("/v1/functions/{name}/aliases");
            let list: AliasList = client.get(&path).await?;
            let rows = list
                .aliases
                .iter()
                .map(|a| vec![a.name.clone(), describe(a)])
                .collect();
            output::table(args.client.output, &list, &["ALIAS", "VERSIONS"], rows)?;
        }
        AliasCommand::Rm { name, alias } => {
            client
                .delete(&format!("/v1/functions/{name}/aliases/{alias}"))
                .await?;
            let value = serde_json::json!({ "deleted": alias });
            output::message(
                args.client.output,
                &value,
                &format!("removed {name}:{alias}"),
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `3`, or `3 (90%), 4 (10%)`.
fn describe(alias: &AliasInfo) -> String {
    let weighted: f64 = alias.weights.values().sum();
    if weighted == 0.0 {
        return alias.version.to_string();
    }
    let mut parts = vec![format!("{} ({})", alias.version, percent(1.0 - weighted))];
    parts.extend(
        alias
            .weights
            .iter()
            .map(|(version, weight)| format!("{version} ({})", percent(*weight))),
    );
    parts.join(", ")
}

fn percent(share: f64) -> String {
    format!("{}%", (share * 1000.0).round() / 10.0)
}

/// Parses `VERSION=SHARE`, the share as `10%` or `0.1`.
pub fn parse_weight(s: &str) -> Result<(u32, f64), String> {
    let (version, share) = s
        .split_once('=')
        .ok_or_else(|| format!("expected VERSION=SHARE, such as 4=10%, not {s:?}"))?;
    let version = version
        .trim()
        .parse::<u32>()
        .map_err(|_| format!("{version:?} is not a version number"))?;
    let share = share.trim();
    let value = match share.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
        None => share.parse::<f64>(),
    }
    .map_err(|_| format!("{share:?} is not a share: write 10% or 0.1"))?;
    if !(0.0..=1.0).contains(&value) {
        return Err(format!("{share} is not between 0% and 100%"));
    }
    Ok((version, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_parse_as_percentages_or_fractions() {
        assert_eq!(parse_weight("4=10%"), Ok((4, 0.1)));
        assert_eq!(parse_weight("4=0.25"), Ok((4, 0.25)));
        assert!(parse_weight("4").is_err());
        assert!(parse_weight("x=10%").is_err());
        assert!(parse_weight("4=120%").is_err());
    }

    #[test]
    fn an_alias_reads_as_its_split() {
        let alias = AliasInfo {
            name: "live".into(),
            version: 3,
            weights: [(4, 0.1)].into(),
        };
        assert_eq!(describe(&alias), "3 (90%), 4 (10%)");
    }
}
