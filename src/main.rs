use clap::Parser;

fn main() {
    let cli = bootstrap::cli::Cli::parse();
    let code = match bootstrap::app::main(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            bootstrap::error::exit_code_for(&err)
        }
    };
    std::process::exit(code);
}
