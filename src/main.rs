fn main() {
    println!("oci-tpm-hook");
}
