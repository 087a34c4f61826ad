fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("nri") => {
            if let Err(e) = oci_tpm_hook::nri::run(&args[2..]) {
                eprintln!("oci-tpm-hook nri: {e:#}");
                std::process::exit(1);
            }
        }
        _ => println!("oci-tpm-hook"),
    }
}
