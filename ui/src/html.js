// Markup as tagged templates (htm) rendered by Preact: no build step of its own, no JSX.

import { h } from "preact";
import htm from "htm";

export const html = htm.bind(h);
