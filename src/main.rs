//! The `fjord` command: parse, dispatch, exit with the subcommand's status.

use clap::Parser;

fn main() {
    let cli = fjord::cli::Cli::parse();
    let code = fjord::cli::run(cli);
    std::process::exit(code);
}
