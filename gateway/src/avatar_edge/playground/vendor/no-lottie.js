// model-viewer loads three's LottieLoader from a CDN for animated (Lottie) textures. The
// playground ships no copy (gen3d's models have none), so such a texture fails here, on
// this origin, rather than reaching for the internet.
export class LottieLoader {
  constructor() {
    throw new Error("Lottie textures are not available in the playground (no CDN).");
  }
}
