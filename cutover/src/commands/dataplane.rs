//! `cutover data-plane`: the long-lived routing process (see the `cutover-dataplane` crate).

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::DataPlaneArgs;

pub async fn run(args: DataPlaneArgs) -> anyhow::Result<ExitCode> {
    let data_dir = args.data_dir.display().to_string();
    let control_tcp = match (args.control_tcp, &args.control_secret_file) {
        (Some(addr), Some(file)) => Some(cutover_dataplane::TcpControl {
            addr,
            secret: cutover_dataplane::SharedSecret::from_file(file)?,
        }),
        _ => None,
    };
    cutover_dataplane::run(cutover_dataplane::Options {
        data_dir: args.data_dir,
        take_over: args.take_over,
        control_tcp,
    })
    .await
    .with_context(|| format!("data plane of {data_dir}"))?;
    Ok(ExitCode::SUCCESS)
}
