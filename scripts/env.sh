# Sourced by the scripts: one target directory outside the clone (so a CI clone reuses a warm
# build on the same machine), and where the built components go.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
export SLUICE_COMPONENTS="${SLUICE_COMPONENTS:-$CARGO_TARGET_DIR/sluice-plugins}"
export SLUICE_TEST_COMPONENTS="$SLUICE_COMPONENTS"
export SLUICE_PLUGINS="$SLUICE_COMPONENTS/plugins"
