"""componentize-py's entry module (`sluice plugin build`): binds plugin.Plugin to the WIT
world `transformer`. The plugin's tests never import it."""

import plugin
import sluice_component

Transform = sluice_component.transformer(plugin.Plugin)
