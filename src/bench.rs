pub async fn run(_settings: crate::config::Settings) -> anyhow::Result<()> {
    Ok(())
}
